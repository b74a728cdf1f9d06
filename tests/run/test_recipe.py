"""The study's flags: --recipe presets (named in --help, explicit flags win, the homework's stays the default),
--ensemble, --weight_decay, --lr_schedule and the -l / -s short forms."""

import pytest

from bcjax.errors import BcjaxError
from bcjax.run.config import RECIPES, Config, config_argv, parse_config
from bcjax.run.flags import build_parser, given, render


def test_the_homework_is_the_default_and_robust_sets_what_help_says():
    assert parse_config([]) == Config() == parse_config(["--recipe", "homework"])
    robust = parse_config(["--recipe", "robust"])
    assert RECIPES["robust"]  # a preset that sets something
    for name, value in RECIPES["robust"].items():
        assert getattr(robust, name) == value != getattr(Config(), name), name
    help_text = " ".join(build_parser(Config).format_help().split())
    tokens = " ".join(t for name, value in RECIPES["robust"].items() for t in render(name, value))
    assert f"robust: {tokens}" in help_text and "(default: homework)" in help_text
    # the recorded command line gives the preset's flags themselves: it reruns without knowing the preset
    assert parse_config(config_argv(robust)) == robust


@pytest.mark.parametrize("name", sorted(RECIPES["robust"]))
def test_explicit_flags_win_over_the_preset(name):
    value = RECIPES["robust"][name]
    if isinstance(value, bool):  # a switch cannot be given off: it is on either way
        return
    other = getattr(Config(), name)  # the homework's value, given explicitly, still wins
    for argv in (["--recipe", "robust", f"--{name}", str(other)], [f"--{name}", str(other), "--recipe", "robust"]):
        cfg = parse_config(argv)
        assert getattr(cfg, name) == other
        assert all(getattr(cfg, n) == v for n, v in RECIPES["robust"].items() if n != name)


def test_a_sweep_passes_a_preset_through_to_its_trials():
    fields, rest = given(Config, ["--recipe", "robust", "--seed", "3", "--grid", "x"], strict=True, known=True)
    assert fields == {**RECIPES["robust"], "seed": 3} and rest == ["--grid", "x"]


def test_study_flags_defaults_and_optimizer_arguments():
    cfg = Config()
    assert (cfg.ensemble, cfg.weight_decay, cfg.lr_schedule) == (1, 0.0, "constant")
    assert cfg.optimizer == (5e-3, 0.0, None)
    cosine = Config(algo="dagger", n_iter=3, num_agent_train_steps_per_iter=100, lr_schedule="cosine", weight_decay=0.1)
    assert cosine.optimizer == (5e-3, 0.1, 300)  # the schedule spans all of the run's updates


def test_short_forms_of_depth_and_width():
    # -l was read as an abbreviation of -lr before it had a meaning of its own: -l 3 trained at step size 3
    cfg = parse_config(["-l", "3", "-s", "256"])
    assert (cfg.n_layers, cfg.size, cfg.learning_rate) == (3, 256, 5e-3)


@pytest.mark.parametrize("kw, message", [({"ensemble": 0}, "--ensemble must be positive"),
                                         ({"weight_decay": -1.0}, "--weight_decay must be 0 or more"),
                                         ({"weight_decay": float("nan")}, "--weight_decay must be 0 or more"),
                                         ({"lr_schedule": "step"}, "--lr_schedule 'step': choose from")])
def test_bad_study_flags_are_one_line_errors(kw, message):
    with pytest.raises(BcjaxError, match=message):
        Config(**kw)


def test_an_unknown_recipe_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(["--recipe", "fast"])
    assert e.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err
