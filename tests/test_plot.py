"""scripts/plot.py: learning curves and metric-vs-hyperparameter PNGs from run directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_runs import cartpole_cfg, cartpole_expert, expert_data, run_logged

from bcjax.errors import BcjaxError
from bcjax.plots import final_value, find_runs, learning_curve, main, plot_hparam, plot_learning_curves


def _fake_run(root: Path, name: str, config: dict, rows: list[dict[str, list[float]]]) -> Path:
    """A run directory with the files a real run writes, holding chosen numbers."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    with (d / "metrics.jsonl").open("w") as f:
        for i, per_seed in enumerate(rows):
            f.write(json.dumps({"Iteration": i, **{k: float(np.mean(v)) for k, v in per_seed.items()},
                                "per_seed": per_seed}) + "\n")
    return d


def _row(ret: list[float], std: list[float], expert: float = 100.0) -> dict[str, list[float]]:
    return {"Eval_AverageReturn": ret, "Eval_StdReturn": std,
            "Initial_DataCollection_AverageReturn": [expert] * len(ret)}


def test_seeds_are_pooled_across_runs_of_a_group(tmp_path):
    cfg = {"env_name": "Hopper-v4", "algo": "dagger", "exp_name": "d", "num_agent_train_steps_per_iter": 100}
    a = _fake_run(tmp_path, "a", {**cfg, "seed": 1}, [_row([1.0, 3.0], [9.0, 9.0]), _row([10.0, 20.0], [1.0, 1.0])])
    b = _fake_run(tmp_path, "b", {**cfg, "seed": 2}, [_row([5.0], [9.0]), _row([30.0], [1.0])])
    runs = find_runs([a, b])
    x, mean, err = learning_curve(runs)
    assert x.tolist() == [0, 1]
    np.testing.assert_allclose(mean, [3.0, 20.0])
    np.testing.assert_allclose(err, [np.std([1, 3, 5]), np.std([10, 20, 30])])  # std across the 3 seeds
    # one seed alone: the error bar is the std across its evaluation episodes
    _, mean1, err1 = learning_curve(find_runs([b]))
    np.testing.assert_allclose(mean1, [5.0, 30.0])
    np.testing.assert_allclose(err1, [9.0, 1.0])
    assert final_value(runs, "Eval_AverageReturn") == pytest.approx((20.0, np.std([10, 20, 30])))


def test_a_folder_of_runs_is_expanded_and_bad_paths_are_errors(tmp_path):
    cfg = {"env_name": "Hopper-v4", "algo": "bc", "exp_name": "b"}
    _fake_run(tmp_path / "data", "r1", cfg, [_row([1.0], [0.0])])
    _fake_run(tmp_path / "data", "r2", cfg, [_row([2.0], [0.0])])
    assert len(find_runs([tmp_path / "data"])) == 2
    with pytest.raises(BcjaxError, match="holds none"):
        find_runs([tmp_path])
    with pytest.raises(BcjaxError, match="no directory"):
        find_runs([tmp_path / "missing"])


def _is_png(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 5000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        return im.size


def test_plot_writes_a_png_from_two_tiny_runs(tmp_path, capsys):
    paths = expert_data("CartPole-v1", cartpole_expert, n=1, ep_len=120)
    dagger, _ = run_logged(cartpole_cfg(tmp_path / "data", n_iter=3, num_seeds=2, exp_name="dag"),
                           cartpole_expert, paths)
    bc, _ = run_logged(cartpole_cfg(tmp_path / "data", algo="bc", n_iter=1, exp_name="bc"), cartpole_expert, paths)
    out = tmp_path / "fig" / "returns.png"
    assert main([str(dagger), str(bc), "--out", str(out)]) == 0
    assert f"wrote {out} (2 run(s))" in capsys.readouterr().out
    w, h = _is_png(out)
    assert w > 400 and h > 300

    hp = plot_hparam(find_runs([dagger, bc]), "num_agent_train_steps_per_iter", tmp_path / "hp.png")
    _is_png(hp)


def test_hparam_plot_checks_its_hyperparameter(tmp_path, capsys):
    runs = []
    for steps in (10, 100, 1000):
        cfg = {"env_name": "Ant-v4", "algo": "bc", "exp_name": f"s{steps}", "num_agent_train_steps_per_iter": steps,
               "activation": "tanh"}
        runs.append(_fake_run(tmp_path, f"s{steps}", cfg, [_row([steps / 10], [1.0])]))
    out = plot_hparam(find_runs(runs), "num_agent_train_steps_per_iter", tmp_path / "steps.png")
    _is_png(out)
    assert main([*map(str, runs), "--hparam", "activation", "--out", str(tmp_path / "x.png")]) == 2
    assert "not a numeric config value" in capsys.readouterr().err
    assert main([*map(str, runs), "--metric", "Nope"]) == 2
    assert "no metric 'Nope'" in capsys.readouterr().err


def test_learning_curves_put_each_task_in_its_own_panel(tmp_path):
    d1 = _fake_run(tmp_path, "h", {"env_name": "Hopper-v4", "algo": "dagger", "exp_name": "d"},
                   [_row([1.0], [0.5]), _row([2.0], [0.5])])
    d2 = _fake_run(tmp_path, "a", {"env_name": "Ant-v4", "algo": "dagger", "exp_name": "d"},
                   [_row([1.0], [0.5]), _row([2.0], [0.5])])
    w_two, _ = _is_png(plot_learning_curves(find_runs([d1, d2]), tmp_path / "two.png"))
    w_one, _ = _is_png(plot_learning_curves(find_runs([d1]), tmp_path / "one.png"))
    assert w_two > 1.6 * w_one


def test_pooled_runs_that_share_a_seed_are_refused():
    from bcjax.plots import Run, _groups, shared_seeds

    def run(name, seed, k):
        return Run(Path(name), {"env_name": "Hopper-v4", "algo": "bc", "exp_name": "bc", "seed": seed, "num_seeds": k}, [])

    assert shared_seeds([run("a", 1, 2), run("b", 2, 3)]) == []  # fold_in streams: (1, 1) is not (2, 0)
    assert shared_seeds([run("a", 1, 2), run("b", 1, 1)]) == [(1, 0)]
    with pytest.raises(BcjaxError, match=r"share seeds \(seed, index\) \[\(1, 0\)\]"):
        _groups([run("a", 1, 2), run("b", 1, 1)])
