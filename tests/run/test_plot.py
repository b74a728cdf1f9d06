"""scripts/plot.py: learning curves and metric-vs-hyperparameter PNGs from run directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_runs import cartpole_cfg, cartpole_expert, expert_data, run_logged

from bcjax.errors import BcjaxError
from bcjax.run.plots import (
    final_value,
    find_runs,
    hparam_figure,
    learning_curve,
    learning_curves_figure,
    main,
    plot_hparam,
)


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
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        return im.size


def _curves(ax) -> dict[str, np.ndarray]:
    """label -> y data of each drawn curve (error-bar lines; horizontal lines as their level)."""
    handles, labels = ax.get_legend_handles_labels()
    out = {}
    for h, label in zip(handles, labels):
        line = h.lines[0] if hasattr(h, "lines") else h  # an errorbar container holds its data line first
        out[label] = np.asarray(line.get_ydata(), float)
    return out


def test_plot_writes_a_png_from_two_tiny_runs(tmp_path, capsys, cartpole_run):
    paths = expert_data("CartPole-v1", cartpole_expert, n=1, ep_len=120)  # what cartpole_run learnt from
    dagger, _ = cartpole_run  # the session's 2-seed DAgger run
    bc, _ = run_logged(cartpole_cfg(tmp_path / "data", algo="bc", n_iter=1, exp_name="bc"), cartpole_expert, paths)
    out = tmp_path / "fig" / "returns.png"
    assert main([str(dagger), str(bc), "--out", str(out)]) == 0
    assert f"wrote {out} (2 run(s))" in capsys.readouterr().out
    w, h = _is_png(out)
    assert w > 400 and h > 300
    # What the reader sees: the DAgger curve (one point per iteration, the mean of its 2 seeds), a BC line
    # at BC's return and the expert's line at its data's return.
    runs = find_runs([dagger, bc])
    (ax,) = learning_curves_figure(runs).axes
    assert ax.get_xlabel() == "DAgger iteration" and ax.get_ylabel() == "Eval_AverageReturn"
    assert ax.get_title() == "CartPole-v1"
    curves = _curves(ax)
    assert len(curves) == 3
    (dag_label,) = [k for k in curves if k.startswith("DAgger")]
    np.testing.assert_allclose(curves[dag_label], learning_curve(find_runs([dagger]))[1])
    (bc_label,) = [k for k in curves if k.startswith("BC")]
    np.testing.assert_allclose(curves[bc_label], final_value(find_runs([bc]), "Eval_AverageReturn")[0])
    (expert_label,) = [k for k in curves if k.startswith("expert")]
    np.testing.assert_allclose(curves[expert_label], np.mean([p["reward"].sum() for p in paths]), rtol=1e-4)

    (ax,) = hparam_figure(runs, "num_agent_train_steps_per_iter").axes
    assert ax.get_xlabel() == "num_agent_train_steps_per_iter"
    assert sorted(k.split()[0] for k in _curves(ax)) == ["BC", "DAgger", "expert"]
    _is_png(plot_hparam(runs, "num_agent_train_steps_per_iter", tmp_path / "hp.png"))


def test_hparam_plot_checks_its_hyperparameter(tmp_path, capsys):
    runs = []
    for steps in (10, 100, 1000):
        cfg = {"env_name": "Ant-v4", "algo": "bc", "exp_name": f"s{steps}", "num_agent_train_steps_per_iter": steps,
               "activation": "tanh"}
        runs.append(_fake_run(tmp_path, f"s{steps}", cfg, [_row([steps / 10], [1.0])]))
    (ax,) = hparam_figure(find_runs(runs), "num_agent_train_steps_per_iter").axes
    (line,) = [v for k, v in _curves(ax).items() if k.startswith("BC")]
    np.testing.assert_allclose(line, [1.0, 10.0, 100.0])  # the final return at each value
    assert ax.get_xscale() == "log"  # 10..1000 spans two decades
    assert main([*map(str, runs), "--hparam", "activation", "--out", str(tmp_path / "x.png")]) == 2
    assert "not a numeric config value" in capsys.readouterr().err
    assert main([*map(str, runs), "--metric", "Nope"]) == 2
    assert "no metric 'Nope'" in capsys.readouterr().err


def test_learning_curves_put_each_task_in_its_own_panel(tmp_path):
    d1 = _fake_run(tmp_path, "h", {"env_name": "Hopper-v4", "algo": "dagger", "exp_name": "d"},
                   [_row([1.0], [0.5]), _row([2.0], [0.5])])
    d2 = _fake_run(tmp_path, "a", {"env_name": "Ant-v4", "algo": "dagger", "exp_name": "d"},
                   [_row([1.0], [0.5]), _row([2.0], [0.5])])
    fig = learning_curves_figure(find_runs([d1, d2]))
    assert [ax.get_title() for ax in fig.axes] == ["Ant-v4", "Hopper-v4"]
    for ax in fig.axes:
        assert len(_curves(ax)) == 2  # its DAgger curve and its expert line, nothing of the other task
    assert len(learning_curves_figure(find_runs([d1])).axes) == 1


def test_pooled_runs_that_share_a_seed_are_refused():
    from bcjax.run.plots import Run, _groups, shared_seeds

    def run(name, seed, k):
        return Run(Path(name), {"env_name": "Hopper-v4", "algo": "bc", "exp_name": "bc", "seed": seed, "num_seeds": k}, [])

    assert shared_seeds([run("a", 1, 2), run("b", 2, 3)]) == []  # fold_in streams: (1, 1) is not (2, 0)
    assert shared_seeds([run("a", 1, 2), run("b", 1, 1)]) == [(1, 0)]
    with pytest.raises(BcjaxError, match=r"share seeds \(seed, index\) \[\(1, 0\)\]"):
        _groups([run("a", 1, 2), run("b", 1, 1)])
