import os

import pytest
import yaml

import keras_hybrid as kh
from keras_hybrid.config import PRESET_NAMES

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")


def test_defaults_match_the_design():
    c = kh.HybridConfig()
    assert c.warmup_steps == 100
    assert c.full_steps == 20
    assert c.max_predict_steps == 80
    assert c.confidence_threshold == 0.85
    assert c.divergence_threshold == 3.0
    assert c.correction_interval == 0
    assert c.predictor.type == "drift"
    assert c.predictor_memory_budget_mb == 50


def test_balanced_preset():
    c = kh.HybridConfig.preset("balanced")
    assert c.max_predict_steps == 75
    assert c.correction_interval == 15
    assert c.confidence_threshold == 0.60


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_config_files_are_the_presets(name):
    path = os.path.join(CONFIG_DIR, f"{name}.yaml")
    assert kh.HybridConfig.from_yaml(path) == kh.HybridConfig.preset(name)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_yaml_round_trip(tmp_path, name):
    c = kh.HybridConfig.preset(name)
    path = tmp_path / "c.yaml"
    path.write_text(c.to_yaml())
    assert kh.HybridConfig.from_yaml(path) == c


def test_yaml_preset_key_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: aggressive\nwarmup_steps: 7\npredictor:\n  trajectory_rank: 2\n")
    c = kh.HybridConfig.from_yaml(path)
    assert c.warmup_steps == 7
    assert c.predictor.trajectory_rank == 2
    assert c.max_predict_steps == kh.HybridConfig.preset("aggressive").max_predict_steps


def test_dict_preset_key_overrides_like_yaml(tmp_path):
    overrides = {"preset": "outer", "full_steps": 10,
                 "predictor": {"outer_learning_rate": 1.5}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(overrides))
    from_yaml = kh.HybridConfig.from_yaml(path)
    for build in (kh.HybridConfig.from_dict, kh.HybridConfig.resolve):
        c = build(dict(overrides))
        assert c == from_yaml
    outer = kh.HybridConfig.preset("outer")
    assert c.full_steps == 10
    assert c.predictor.outer_learning_rate == 1.5
    assert c.predictor.type == outer.predictor.type == "nesterov"
    assert c.max_predict_steps == outer.max_predict_steps
    # The dict passed in is not changed.
    assert overrides == {"preset": "outer", "full_steps": 10,
                         "predictor": {"outer_learning_rate": 1.5}}


def test_callback_accepts_a_dict_with_a_preset():
    callback = kh.HybridPredictCallback({"preset": "outer", "full_steps": 10})
    assert callback.config.full_steps == 10
    assert callback.config.predictor.type == "nesterov"


def test_dict_with_an_unknown_preset_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean the preset 'outer'"):
        kh.HybridConfig.from_dict({"preset": "outr"})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"warmup_steps": -1}, "`warmup_steps` must be >= 0. Received: warmup_steps=-1"),
        ({"warmup_steps": 1.5}, "`warmup_steps` must be an integer. Received: warmup_steps=1.5"),
        ({"full_steps": 1}, "`full_steps` must be >= 2. Received: full_steps=1"),
        ({"confidence_threshold": 1.5}, "`confidence_threshold` must be <= 1.0"),
        ({"confidence_threshold": float("nan")}, "`confidence_threshold` must be finite"),
        ({"predict_mode": "fast"}, "`predict_mode` must be one of ['jump', 'per_step']"),
        ({"min_predict_steps": 50, "max_predict_steps": 20}, "`min_predict_steps` must be <= `max_predict_steps`"),
        ({"validation_samples": 10, "min_predict_steps": 10}, "`validation_samples` must be < `min_predict_steps`"),
        ({"predictor": {"type": "transformer"}}, "`predictor.type` must be one of ['drift', 'linear', 'mlp', 'rssm', 'nesterov', 'holt']"),
        ({"predictor": {"momentum": 1.0}}, "`predictor.momentum` must be <= 0.999"),
        ({"predictor": {"outer_learning_rate": 0.0}}, "`predictor.outer_learning_rate` must be > 0.0"),
        ({"predictor": {"min_agreement": 1.5}}, "`predictor.min_agreement` must be <= 1.0"),
        ({"predictor": {"min_lr_fraction": -0.1}}, "`predictor.min_lr_fraction` must be >= 0.0"),
        ({"predictor": {"shrinkage": "global"}}, "`predictor.shrinkage` must be one of ['tensor', 'coordinate', 'none']"),
        ({"predictor": {"type": "nesterov", "shrinkage": "coordinate"}}, "`'nesterov'` takes `'tensor'` or `'none'`"),
        ({"predictor": {"dropout": -0.1}}, "`predictor.dropout` must be >= 0.0"),
        ({"predictor": {"jump_scales": []}}, "`predictor.jump_scales` must not be empty"),
        ({"predictor": {"refit_interval": 0}}, "`predictor.refit_interval` must be >= 1. Received: refit_interval=0"),
        ({"divergence": {"grad_vanishing_factor": 2.0}}, "`divergence.grad_vanishing_factor` must be <= 1.0"),
        ({"checkpoint": {"keep_last_n": 0}}, "`checkpoint.keep_last_n` must be >= 1"),
        ({"metrics": {"log_to_progbar": "yes"}}, "`metrics.log_to_progbar` must be a boolean"),
        ({"collect_metrics": 1}, "`collect_metrics` must be a boolean"),
    ],
)
def test_bad_values_are_refused_with_the_field_and_value(overrides, message):
    with pytest.raises(ValueError) as info:
        kh.HybridConfig.from_dict(overrides)
    assert message in str(info.value)
    assert "Received:" in str(info.value)


def test_unknown_key_suggests_the_closest_field():
    with pytest.raises(ValueError, match="Did you mean `warmup_steps`"):
        kh.HybridConfig.from_dict({"warmup_step": 3})
    with pytest.raises(ValueError, match="Did you mean `predictor.ensemble_size`"):
        kh.HybridConfig.from_dict({"predictor": {"ensemble_sise": 3}})


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ValueError, match="Config file not found"):
        kh.HybridConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("warmup_steps: [1,\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        kh.HybridConfig.from_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping at the top level"):
        kh.HybridConfig.from_yaml(lst)


def test_the_default_preset_is_the_measured_conservative_one():
    """`HybridPredictCallback()` uses the `default` preset: the settings of
    `conservative`, which never predicted on the bench tasks; the field
    defaults (the base of every other preset) stay as they are."""
    default = kh.HybridConfig.preset("default")
    assert default == kh.HybridConfig.preset("conservative")
    assert default.confidence_threshold == 0.9
    assert kh.HybridConfig().confidence_threshold == 0.85
    callback = kh.HybridPredictCallback()
    assert callback.config is None  # resolved when fit() starts


def test_resolve_accepts_every_form(tmp_path):
    assert kh.HybridConfig.resolve(None) == kh.HybridConfig.preset("default")
    assert kh.HybridConfig.resolve("balanced") == kh.HybridConfig.preset("balanced")
    assert kh.HybridConfig.resolve({"warmup_steps": 3}).warmup_steps == 3
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"full_steps": 8}))
    assert kh.HybridConfig.resolve(str(path)).full_steps == 8
    with pytest.raises(ValueError, match="Received: config=3"):
        kh.HybridConfig.resolve(3)
    with pytest.raises(ValueError, match="Unknown preset. The presets are"):
        kh.HybridConfig.preset("fastest")


@pytest.mark.parametrize("name,closest", [
    ("balance", "balanced"), ("Balanced", "balanced"),
    ("AGGRESIVE", "aggressive"), ("conservativ", "conservative"),
])
def test_wrong_preset_name_suggests_the_closest(name, closest):
    for build in (kh.HybridConfig.preset, kh.HybridConfig.from_yaml,
                  kh.HybridConfig.resolve):
        with pytest.raises(ValueError) as info:
            build(name)
        message = str(info.value)
        assert f"Did you mean the preset {closest!r}?" in message
        assert ("['default', 'conservative', 'balanced', 'aggressive', "
                "'outer', 'plain', 'finetune']") in (
            message
        )


@pytest.mark.parametrize("existing,asked", [
    ("balanced.yaml", "balanced.yml"), ("mine.yml", "mine.yaml"),
])
def test_missing_config_file_suggests_the_other_extension(tmp_path, existing,
                                                         asked):
    (tmp_path / existing).write_text("warmup_steps: 3\n")
    with pytest.raises(ValueError) as info:
        kh.HybridConfig.resolve(str(tmp_path / asked))
    message = str(info.value)
    assert f"Did you mean {str(tmp_path / existing)!r}?" in message
    assert "the preset" not in message


def test_missing_config_file_suggests_nothing_unrelated(tmp_path):
    with pytest.raises(ValueError, match="Config file not found. The "):
        kh.HybridConfig.from_yaml(str(tmp_path / "mine.yaml"))


@pytest.mark.parametrize("section,field,value,message", [
    (None, "warmup_steps", -5, "`warmup_steps` must be >= 0"),
    (None, "min_predict_steps", 10**6, "`min_predict_steps` must be <="),
    ("predictor", "refit_interval", 0, "`predictor.refit_interval` must be"),
    ("metrics", "log_to_progbar", "yes", "`metrics.log_to_progbar` must be"),
])
def test_validate_catches_fields_changed_after_building(section, field, value,
                                                        message):
    config = kh.HybridConfig.preset("balanced")
    assert config.validate() is config
    setattr(config if section is None else getattr(config, section), field,
            value)
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_to_dict_is_plain_yaml():
    d = kh.HybridConfig().to_dict()
    assert isinstance(d["predictor"]["jump_scales"], list)
    assert yaml.safe_load(yaml.safe_dump(d)) == d
