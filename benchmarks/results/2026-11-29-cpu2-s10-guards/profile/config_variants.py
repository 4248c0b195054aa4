import os, sys, time, json
import numpy as np, keras
import keras_hybrid as kh
from keras_hybrid.bench import overhead as ov
from keras_hybrid.bench.arms import compile_model, resolve_task
task=resolve_task({"task":os.environ.get("TASK","mnist1d-mlp"),"quick":True,"seed":0})
base=dict(kh.HybridConfig.resolve("balanced").to_dict(), enable_prediction=False)
variants=json.loads(os.environ.get("VARIANTS",'{"default":{}}'))
configs={}
for name,ch in variants.items():
    d=json.loads(json.dumps(base))
    for k,v in ch.items():
        if "." in k: a,b=k.split("."); d[a][b]=v
        else: d[k]=v
    configs[name]=kh.HybridConfig.from_dict(d)
start=ov.window_start(configs[list(configs)[0]]); steps=int(os.environ.get("STEPS",400)); batch=task.batch_size
count=batch*(start+steps); reps=-(-count//len(task.x_train))
x=np.concatenate([task.x_train]*reps)[:count]; y=np.concatenate([task.y_train]*reps)[:count]
plain=compile_model(task.build_model(0),task,task.learning_rate)
models={n:compile_model(kh.HybridModel.wrap(task.build_model(0)),task,task.learning_rate) for n in configs}
def timed(model, cfg):
    clock=ov.WindowClock(start); cbs=[clock]
    if cfg is not None: cbs.insert(0, kh.HybridPredictCallback(cfg))
    model.fit(x,y,batch_size=batch,epochs=1,verbose=0,shuffle=False,callbacks=cbs)
    return clock.seconds
timed(plain,None)
for n in configs: timed(models[n],configs[n])
T={"plain":[]}; T.update({n:[] for n in configs})
for i in range(int(os.environ.get("REPS",7))):
    order=[("plain",plain,None)]+[(n,models[n],configs[n]) for n in configs]
    if i%2: order.reverse()
    for n,m,c in order: T[n].append(timed(m,c))
p=np.array(T["plain"])
for n in configs:
    h=np.array(T[n]); print(f"{n:20s} min-ratio {h.min()/p.min():.3f} median-pair {np.median(h/p):.3f}")
print("plain min %.4f"%p.min())
