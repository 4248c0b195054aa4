import sys, yaml, copy
base = yaml.safe_load(open("/work/main/configs/outer.yaml"))
def make(name, L=2, full=15, mu=0.5, eta=2.0, scales=(7.5,), conf=0.0, **extra):
    c = copy.deepcopy(base)
    c.update(full_steps=full, min_predict_steps=L, max_predict_steps=L, validation_samples=L,
             train_check_batches=True, confidence_threshold=conf)
    c["predictor"].update(momentum=mu, outer_learning_rate=eta, jump_scales=list(scales))
    for k, v in extra.items():
        if k.startswith("p_"): c["predictor"][k[2:]] = v
        else: c[k] = v
    yaml.safe_dump(c, open(f"configs/{name}.yaml", "w"), sort_keys=False)
exec(sys.argv[1])
