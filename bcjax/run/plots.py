"""The homework's figures from run directories (metrics.jsonl + config.json), as PNG with matplotlib.

- `plot_learning_curves`: DAgger iteration vs mean return with ±std error bars,
  BC runs and the expert (its data's mean return) as horizontal lines; one
  panel per task.
- `plot_hparam`: a metric at the final iteration vs a hyperparameter across runs.

Runs with the same task, algorithm and `exp_name` are one group: their seeds
(`--num_seeds` and separate runs with different `--seed`) are pooled, and the
error bar is the std across them. A group with a single seed shows the std
across its evaluation episodes (`Eval_StdReturn`) instead.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from bcjax.errors import BcjaxError, run_script
from bcjax.run.flags import REQUIRED, flag, parse
from bcjax.run.logger import read_metrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@dataclass
class Run:
    path: Path
    config: dict
    rows: list[dict]

    @property
    def group(self) -> tuple[str, str, str]:
        """Task, algorithm and exp_name: the runs of a group pool their seeds."""
        c = self.config
        return str(c.get("env_name", "?")), str(c.get("algo", "?")), str(c.get("exp_name", self.path.name))

    def per_seed(self, row: dict, metric: str) -> list[float]:
        if metric not in row:
            raise BcjaxError(f"{self.path}: no metric {metric!r}; it logs {', '.join(sorted(k for k in row if k != 'per_seed'))}")
        return [float(v) for v in row.get("per_seed", {}).get(metric, [row[metric]])]


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not (path / "metrics.jsonl").is_file():
        raise BcjaxError(f"{path} has no metrics.jsonl: pass run directories (data/q1_..., data/q2_...)")
    config_file = path / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    rows = read_metrics(path)
    if not rows:
        raise BcjaxError(f"{path}/metrics.jsonl is empty: the run logged no iteration yet")
    return Run(path, config, rows)


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Each path is a run directory, or a folder whose run directories (one level down) are all taken."""
    runs = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise BcjaxError(f"no directory {p}")
        found = [p] if (p / "metrics.jsonl").is_file() else sorted(d for d in p.iterdir() if (d / "metrics.jsonl").is_file())
        if not found:
            raise BcjaxError(f"{p} is not a run directory and holds none")
        runs.extend(map(load_run, found))
    return runs


def _pooled(pairs: list[tuple[Run, dict]], metric: str) -> tuple[float, float]:
    """Mean and error bar of `metric` over the seeds of (run, row) pairs: the std across seeds, or for a
    single seed the std across its evaluation episodes (Eval_StdReturn for Eval_AverageReturn)."""
    values = [v for run, row in pairs for v in run.per_seed(row, metric)]
    if len(values) > 1:
        return float(np.mean(values)), float(np.std(values))
    std_name = metric.replace("AverageReturn", "StdReturn") if metric.endswith("AverageReturn") else None
    stds = [v for run, row in pairs if std_name in row for v in run.per_seed(row, std_name)]
    return float(values[0]), float(stds[0]) if stds else 0.0


def learning_curve(runs: list[Run], metric: str = "Eval_AverageReturn") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iterations, mean and error bar of `metric` pooled over the runs' seeds (iterations all runs logged)."""
    by_itr: dict[int, list[tuple[Run, dict]]] = defaultdict(list)
    for run in runs:
        for row in run.rows:
            by_itr[row["Iteration"]].append((run, row))
    iters = sorted(i for i, pairs in by_itr.items() if len(pairs) == len(runs))
    stats = np.array([_pooled(by_itr[i], metric) for i in iters]).reshape(-1, 2)
    return np.asarray(iters), stats[:, 0], stats[:, 1]


def final_value(runs: list[Run], metric: str) -> tuple[float, float]:
    """Mean and error bar of `metric` at each run's last logged iteration, pooled over seeds."""
    return _pooled([(r, r.rows[-1]) for r in runs], metric)


def shared_seeds(runs: list[Run]) -> list[tuple[int, int]]:
    """The (seed, seed index) pairs that more than one of the pooled runs trained: the same random stream
    twice, which would draw error bars too tight (seed index k of --seed S is fold_in(PRNGKey(S), k))."""
    seen = Counter((int(r.config.get("seed", 1)), k) for r in runs for k in range(int(r.config.get("num_seeds", 1))))
    return sorted(pair for pair, n in seen.items() if n > 1)


def _groups(runs: list[Run]) -> dict[tuple[str, str, str], list[Run]]:
    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for r in runs:
        groups[r.group].append(r)
    for group, members in groups.items():
        dup = shared_seeds(members)
        if dup:
            raise BcjaxError(f"runs pooled as {'/'.join(group)} share seeds (seed, index) {dup}: they are the same "
                             "random stream twice; pool runs with different --seed, or plot one of them")
    return dict(groups)


def _label(group: tuple[str, str, str], runs: list[Run]) -> str:
    _, algo, name = group
    n_seeds = sum(len(r.per_seed(r.rows[-1], "Eval_AverageReturn")) for r in runs)
    label = "DAgger" if algo == "dagger" else "BC"
    if name.lower() not in ("run", "bc", "dagger", algo):  # the default or a repeat of the algorithm adds nothing
        label += f" {name}"
    return label + (f" ({n_seeds} seeds)" if n_seeds > 1 else "")


def _expert_line(ax: Axes, runs: list[Run], metric: str, label: str) -> None:
    """The expert's return (the mean return of its data), where `metric` is a return."""
    values = [r.rows[0]["Initial_DataCollection_AverageReturn"] for r in runs
              if "Initial_DataCollection_AverageReturn" in r.rows[0]]
    if values and metric.endswith("AverageReturn"):
        ax.axhline(float(np.mean(values)), linestyle=":", color="black", label=f"{label}: {np.mean(values):.0f}")


def _finish(ax: Axes, **labels: str) -> None:
    ax.set(**labels)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig: Figure, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


def plot_learning_curves(runs: list[Run], out: str | Path, metric: str = "Eval_AverageReturn",
                         title: str | None = None) -> Path:
    """`learning_curves_figure` written to `out` (PNG)."""
    return _save(learning_curves_figure(runs, metric, title), out)


def learning_curves_figure(runs: list[Run], metric: str = "Eval_AverageReturn", title: str | None = None) -> Figure:
    """DAgger curves (mean ± std per iteration), BC and expert lines; one panel per task."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not runs:
        raise BcjaxError("no runs to plot")
    groups = _groups(runs)
    envs = sorted({env for env, _, _ in groups})
    fig = Figure(figsize=(6.4 * len(envs), 4.4))
    for ax, env in zip(np.atleast_1d(fig.subplots(1, len(envs))), envs):
        here = {g: rs for g, rs in groups.items() if g[0] == env}
        dagger = {g: rs for g, rs in here.items() if g[1] == "dagger"}
        for g, rs in dagger.items():
            x, y, e = learning_curve(rs, metric)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=_label(g, rs))
        colors = iter(["tab:red", "tab:purple", "tab:brown", "tab:olive", "tab:cyan"])
        for g, rs in here.items():
            if g not in dagger:  # BC: its final value as a line, its error bar as a band
                (y, e), color = final_value(rs, metric), next(colors, "gray")
                ax.axhline(y, linestyle="--", color=color, label=f"{_label(g, rs)}: {y:.0f}")
                ax.axhspan(y - e, y + e, color=color, alpha=0.12)
        _expert_line(ax, [r for rs in here.values() for r in rs], metric, "expert (data)")
        ax.set_xlim(-0.3, max([int(r.rows[-1]["Iteration"]) for rs in dagger.values() for r in rs] or [1]) + 0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _finish(ax, xlabel="DAgger iteration", ylabel=metric, title=title or env)
    return fig


def _numeric(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def plot_hparam(runs: list[Run], hparam: str, out: str | Path, metric: str = "Eval_AverageReturn",
                title: str | None = None, split_by: str | list[str] | None = None) -> Path:
    """`hparam_figure` written to `out` (PNG)."""
    return _save(hparam_figure(runs, hparam, metric, title, split_by), out)


def hparam_figure(runs: list[Run], hparam: str, metric: str = "Eval_AverageReturn", title: str | None = None,
                  split_by: str | list[str] | None = None) -> Figure:
    """`metric` at the final iteration vs `hparam` (a config field), one line per task and algorithm
    (and per value of the config field(s) `split_by`, if given)."""
    from matplotlib.figure import Figure

    if not runs:
        raise BcjaxError("no runs to plot")
    missing = [str(r.path) for r in runs if _numeric(r.config.get(hparam)) is None]
    if missing:
        numeric = sorted(k for k, v in runs[0].config.items() if _numeric(v) is not None)
        raise BcjaxError(f"--hparam {hparam!r} is not a numeric config value of {missing[0]}; numeric ones: {', '.join(numeric)}")
    splits = [split_by] if isinstance(split_by, str) else split_by or []
    lines: dict[tuple[str, str, str], dict[float, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        split = "".join(f" {s}={r.config.get(s)}" for s in splits)
        lines[(*r.group[:2], split)][_numeric(r.config[hparam])].append(r)
    ax = Figure(figsize=(6.4, 4.4)).subplots()
    for (env, algo, split), points in sorted(lines.items()):
        stats = np.array([final_value(points[x], metric) for x in sorted(points)])
        ax.errorbar(sorted(points), stats[:, 0], yerr=stats[:, 1], marker="o", capsize=3,
                    label=f"{'DAgger' if algo == 'dagger' else 'BC'} {env}{split}")
    for env in sorted({r.group[0] for r in runs}):
        _expert_line(ax, [r for r in runs if r.group[0] == env], metric, f"expert {env}")
    xs = [_numeric(r.config[hparam]) for r in runs]
    if min(xs) > 0 and max(xs) / min(xs) >= 30:
        ax.set_xscale("log")
    _finish(ax, xlabel=hparam, ylabel=f"{metric} (final iteration)", title=title or f"{metric} vs {hparam}")
    return ax.figure


@dataclass(frozen=True)
class PlotArgs:
    """Plot bcjax runs (PNG)."""

    PROG: ClassVar[str] = "plot.py"
    run_dirs: tuple[str, ...] = flag(REQUIRED, "run directories, or folders of run directories", positional=True)
    out: str | None = flag(None, "PNG path; unset: returns.png, or <hparam>.png with --hparam")
    metric: str = flag("Eval_AverageReturn", "metric to plot")
    hparam: str | None = flag(None, "plot the final metric against this config field instead")
    split_by: str | None = flag(None, "with --hparam: one line per value of this config field")
    title: str | None = flag(None, "the figure's title; unset: the task, or METRIC vs HPARAM")


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = parse(PlotArgs, argv)
        runs = find_runs(list(args.run_dirs))
        if args.hparam:
            out = plot_hparam(runs, args.hparam, args.out or f"{args.hparam}.png", args.metric, args.title, args.split_by)
        else:
            out = plot_learning_curves(runs, args.out or "returns.png", args.metric, args.title)
        print(f"wrote {out} ({len(runs)} run(s))")
        return 0

    return run_script(body)
