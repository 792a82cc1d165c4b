"""Config: defaults, every preset, dotted overrides, every validation error, round trips."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from ccfs.config import CONFIG_DIR, Config, _build, load_config, read_preset, dump_config, to_dict
from ccfs.errors import ConfigError

PRESETS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def test_presets_exist():
    assert PRESETS, f"no presets found under {CONFIG_DIR}"


def test_defaults_load():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.select.method == ["ccfs", "random"]
    assert cfg.distill.from_ is None


def test_defaults_are_the_recommended_fashion_mnist_settings_and_the_main_job_only_shortens_them():
    """The defaults are the recommended Fashion-MNIST settings; the main job's preset sets its
    run directory and the three lengths chosen on validation to fit in 10 minutes (the
    teacher's epochs, the filters' and the students' steps) and the score its study used
    (AUM), and nothing else."""
    main_job = to_dict(load_config("fmnist-quick"))
    defaults = to_dict(Config())
    assert main_job["out"] == "runs/fmnist-quick"
    for section, key in (("select", "filter_steps"), ("select", "score"), ("train", "steps")):
        assert main_job[section][key] != defaults[section][key]
        main_job[section][key] = defaults[section][key]
    assert main_job["teacher"]["train"]["epochs"] < defaults["teacher"]["train"]["epochs"]
    main_job["teacher"]["train"]["epochs"] = defaults["teacher"]["train"]["epochs"]
    assert {**main_job, "out": None} == {**defaults, "out": None}
    assert (defaults["data"]["name"], defaults["train"]["steps"], defaults["teacher"]["train"]["epochs"]) == (
        "fashion-mnist", 4800, 15)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_validates(name):
    cfg = load_config(name)
    raw = read_preset(name)  # its own values over its bases'
    assert "base" not in raw
    assert to_dict(cfg)["select"]["ipc"] == raw.get("select", {}).get("ipc", Config().select.ipc)
    assert load_config(str(CONFIG_DIR / f"{name}.yaml")) == cfg  # by path as well as by name


def test_no_two_presets_differ_only_in_ipc_and_out():
    """The IPCs of one protocol are one preset's list (a sweep); a separate preset must differ in
    more than select.ipc and out."""
    seen = {}
    for name in PRESETS:
        d = to_dict(load_config(name))
        del d["out"], d["select"]["ipc"]
        key = yaml.safe_dump(d, sort_keys=True)
        assert key not in seen, f"presets {seen.get(key)} and {name} differ only in select.ipc and out: " \
                                "make them one preset with select.ipc as a list"
        seen[key] = name


# ----------------------------------------------------------------------------- preset bases

def _write(path, text):
    path.write_text(text)
    return str(path)


def test_base_preset_is_merged_under_the_child(tmp_path):
    base = _write(tmp_path / "base.yaml", "teacher:\n  model: convnet_bn\n  train:\n    epochs: 4\n    lr: 0.3\n"
                  "select:\n  ipc: 9\n  method: [random]\nout: runs/base\n")
    child = _write(tmp_path / "child.yaml", f"base: {base}\nteacher:\n  train:\n    epochs: 6\n"
                   "select:\n  method: [ccfs]\nout: runs/child\n")
    cfg = load_config(child)
    assert cfg.teacher.train.epochs == 6 and cfg.teacher.train.lr == 0.3  # nested sections merge key by key
    assert cfg.teacher.model == "convnet_bn" and cfg.select.ipc == 9  # unset keys come from the base
    assert cfg.select.method == ["ccfs"] and cfg.out == "runs/child"  # the child wins; lists are replaced
    assert cfg.teacher.train.batch_size == Config().teacher.train.batch_size  # the base's unset keys: defaults
    grandchild = _write(tmp_path / "grandchild.yaml", f"base: {child}\nselect:\n  ipc: 11\n")
    cfg = load_config(grandchild, ["teacher.train.lr=0.7"])  # bases chain; overrides still win
    assert (cfg.select.ipc, cfg.teacher.train.epochs, cfg.teacher.train.lr, cfg.out) == (11, 6, 0.7, "runs/child")
    saved = tmp_path / "run" / "config.yaml"
    saved.parent.mkdir()
    saved.write_text(dump_config(cfg))
    assert "base" not in yaml.safe_load(saved.read_text()) and load_config(str(saved)) == cfg


def test_base_by_preset_name(tmp_path):
    child = _write(tmp_path / "child.yaml", "base: tiny\nselect:\n  ipc: 4\n")
    assert load_config(child) == load_config("tiny", ["select.ipc=4"])


def test_missing_base_is_a_config_error(tmp_path):
    child = _write(tmp_path / "child.yaml", "base: no-such-preset\nselect:\n  ipc: 4\n")
    with pytest.raises(ConfigError, match="base: no preset 'no-such-preset'") as e:
        load_config(child)
    assert "\n" not in str(e.value) and "child.yaml" in str(e.value)


def test_base_cycle_is_a_config_error(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    _write(a, f"base: {b}\n")
    _write(b, f"base: {a}\n")
    with pytest.raises(ConfigError, match="cycle: a -> b -> a") as e:
        load_config(str(a))
    assert "\n" not in str(e.value)
    own = _write(tmp_path / "own.yaml", f"base: {tmp_path / 'own.yaml'}\n")
    with pytest.raises(ConfigError, match="cycle: own -> own"):
        load_config(own)


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="tiny"):
        load_config("no-such-preset")


# ----------------------------------------------------------------------------- overrides

@pytest.mark.parametrize("override, get, expected", [
    ("select.ipc=17", lambda c: c.select.ipc, 17),
    ("select.alpha=0", lambda c: c.select.alpha, 0.0),
    ("eval.seeds=[0,1]", lambda c: c.eval.seeds, [0, 1]),
    ("eval.seeds=4", lambda c: c.eval.seeds, [4]),
    ("select.method=ccfs", lambda c: c.select.method, ["ccfs"]),
    ("select.method=[random,herding]", lambda c: c.select.method, ["random", "herding"]),
    ("teacher.checkpoint=/a/b.pt", lambda c: c.teacher.checkpoint, "/a/b.pt"),
    ("data.mean=[0.5]", lambda c: c.data.mean, [0.5]),
    ("select.balance=false", lambda c: c.select.balance, False),
    ("train.epochs=5", lambda c: c.train.epochs, 5),
    ("train.lr=1e-3", lambda c: c.train.lr, 1e-3),
    ("out=runs/x", lambda c: c.out, "runs/x"),
])
def test_override_values_are_yaml(override, get, expected):
    cfg = load_config(None, [override])
    assert get(cfg) == expected and type(get(cfg)) is type(expected)
    assert cfg != Config()


def test_override_beats_preset():
    assert load_config("tiny").select.ipc != 50
    assert load_config("tiny", ["select.ipc=50"]).select.ipc == 50


def test_later_override_wins():
    assert load_config(None, ["select.ipc=3", "select.ipc=9"]).select.ipc == 9


def test_distill_from_maps_to_from_field():
    cfg = load_config(None, ["distill.method=folder", "distill.from=/x"])
    assert cfg.distill.from_ == "/x"
    assert to_dict(cfg)["distill"]["from"] == "/x"


def test_null_override_clears_optional():
    cfg = load_config(None, ["teacher.checkpoint=/t.pt", "teacher.checkpoint=null"])
    assert cfg.teacher.checkpoint is None


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("override, valid_key", [
    ("select.ipcc=5", "select.ipc"),
    ("nope=1", "select"),
    ("train.epoch=3", "train.epochs"),
    ("distill.from_=/x", "distill.from"),
])
def test_unknown_key_names_valid_keys(override, valid_key):
    with pytest.raises(ConfigError, match="unknown config key") as e:
        load_config(None, [override])
    assert valid_key in str(e.value)


@pytest.mark.parametrize("override", [
    "select.ipc=abc", "select.ipc=1.5", "select.ipc=true", "select.balance=3",
    "select.alpha=yes", "select.alpha=abc", "eval.seeds=[a,b]", "select.alpha=[0.1,abc]", "select.ipc=[5,1.5]",
])
def test_wrong_type_is_an_error(override):
    with pytest.raises(ConfigError, match="should be of type"):
        load_config(None, [override])


@pytest.mark.parametrize("overrides, match", [
    (["select.alpha=1.0"], "select.alpha"),
    (["select.alpha=-0.1"], "select.alpha"),
    (["select.curricula=0"], "select.curricula"),
    (["select.ipc=0"], "select.ipc"),
    (["select.score=vibes"], "select.score"),
    (["distill.method=folder"], "distill.from"),
    (["distill.method=tensor"], "distill.from"),
    (["distill.method=gan"], "distill.method"),
    (["train.augment=mixup"], "train.augment"),
    (["train.epochs=0"], "train.epochs"),
    (["eval.seeds=[]"], "eval.seeds"),
    (["eval.sweep_seeds=-1"], "eval.sweep_seeds"),
    (["eval.group=-1"], "eval.group"),
    (["select=3"], "section"),
    (["select.ipc"], "key=value"),
])
def test_invalid_values_are_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_unknown_method_lists_valid_methods(capsys):
    """Method names are checked against the method table before any stage starts."""
    from ccfs.cli import main

    assert main(["select", "tiny", "select.method=[ccfs,magic]", "data.root=/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "magic" in err and "ccfs" in err and "random" in err and "dataset" not in err


def test_alpha_bounds_inclusive_zero():
    assert load_config(None, ["select.alpha=0.0"]).select.alpha == 0.0
    assert load_config(None, ["select.alpha=0.99"]).select.alpha == 0.99


def test_bad_yaml_preset_is_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("select: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(scalar))


# ----------------------------------------------------------------------------- round trips

def _nondefault() -> Config:
    return load_config("tiny", ["distill.method=folder", "distill.from=/imgs", "select.method=[random]",
                                "data.mean=[0.25]", "select.window_betas=[0.5]",
                                "eval.seeds=[3,4]", "train.warmup_epochs=2", "seed=7"])


def test_to_dict_round_trips_through_yaml():
    cfg = _nondefault()
    assert _build(Config, yaml.safe_load(yaml.safe_dump(to_dict(cfg))), "") == cfg


def test_save_then_load_gives_equal_config(tmp_path):
    cfg = _nondefault()
    path = tmp_path / "sub" / "config.yaml"
    path.parent.mkdir()
    path.write_text(dump_config(cfg))
    loaded = load_config(str(path))
    assert loaded == cfg
    for f in dataclasses.fields(cfg):  # not merely equal by accident of defaults
        assert getattr(loaded, f.name) == getattr(cfg, f.name)
    assert loaded.distill.from_ == "/imgs" and loaded.seed == 7


@pytest.mark.parametrize("text, expected", [("1e-3", 1e-3), ("5e-4", 5e-4), ("2E+1", 20.0)])
def test_float_without_dot_is_a_float(tmp_path, text, expected):
    """PyYAML (YAML 1.1) reads `1e-3` as a string; a float field must still accept it."""
    assert load_config(None, [f"train.lr={text}"]).train.lr == expected
    preset = tmp_path / "p.yaml"
    preset.write_text(f"teacher:\n  train:\n    weight_decay: {text}\n")
    assert load_config(str(preset)).teacher.train.weight_decay == expected


def test_every_field_has_a_one_line_description():
    from ccfs.config import describe

    rows = describe()
    assert len(rows) > 60
    missing = [key for key, _, _, text in rows if not text or "\n" in text]
    assert not missing, f"fields without a one-line description: {missing}"


def test_teacher_recipe_is_the_shared_recipe_with_its_own_defaults(tmp_path):
    from ccfs.config import Recipe

    cfg = load_config(None, ["teacher.train.lr=0.3"])
    assert isinstance(cfg.teacher.train, Recipe)
    assert cfg.teacher.train.lr == 0.3
    assert (cfg.teacher.train.epochs, cfg.teacher.train.augment, cfg.teacher.train.crop_pad) == (15, "crop", 2)
    assert (cfg.train.augment, cfg.train.steps) == ("rrc", 4800)  # the students' recipe has its own defaults
    assert Recipe().steps == 0  # a bare Recipe trains its epochs


def test_literal_choices_name_the_valid_values():
    with pytest.raises(ConfigError, match="simple, hard, random"):
        load_config(None, ["select.fine=medium"])


def test_config_listing_shows_keys_and_methods(capsys):
    from ccfs.cli import main

    assert main(["config", "tiny", "select.ipc=7"]) == 0
    out = capsys.readouterr().out
    assert "select.ipc" in out and " 7 " in out and "teacher.train.epochs" in out
    assert "window" in out and "sliding window" in out


def test_config_listing_of_the_defaults(capsys):
    from ccfs.cli import main

    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "train.steps" in out and "4800" in out and "select.score" in out and "aum" in out



def test_ipc_and_alpha_take_a_number_or_a_list():
    cfg = load_config(None, ["select.ipc=[10,55]", "select.alpha=[0.1,0.2]"])
    assert cfg.select.ipc == [10, 55] and cfg.select.alpha == [0.1, 0.2]
    assert load_config(None, ["select.ipc=7"]).select.ipc == 7
    with pytest.raises(ConfigError, match="must be in"):
        load_config(None, ["select.alpha=[0.1,1.0]"])
    with pytest.raises(ConfigError, match="at least one"):
        load_config(None, ["select.ipc=[]"])


@pytest.mark.parametrize("overrides, message", [
    (["train.mix=cutmix", "eval.objective=ce"], "needs eval.objective=kd"),
    (["teacher.train.mix=mixup"], "teacher.train.mix is not a teacher setting"),
    (["data.val_size=-5"], "0 or more"),
    (["train.steps=-1"], "0 or more"),
])
def test_mixing_and_counts_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
