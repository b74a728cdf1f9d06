"""A sweep's summary from its trials' outcomes: per task × algorithm × setting, the final metric over
seeds (mean ± std, IQM with a bootstrap interval), as summary.md, .csv, .json, and plots/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from bcjax.run.config import config_argv, config_dict
from bcjax.sweeps.runner import REPO, Outcome


def summarize_groups(outcomes: list[Outcome], metric: str = "Eval_AverageReturn") -> list[dict]:
    """One entry per task × algorithm × setting: the statistics over its seeds (those of trials that ran)."""
    from bcjax.run.stats import summarize

    groups: dict[tuple[str, str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.trial.group, []).append(o)
    summary = []
    for (env, algo, exp), members in groups.items():
        ran = [o for o in members if o.rows]
        values = [float(v) for o in ran for v in o.rows[-1]["per_seed"][metric]]  # each seed's final value
        entry = {"env_name": env, "algo": algo, "exp_name": exp, "setting": members[0].trial.setting,
                 "trials": len(members), "failed": sum(o.status == "failed" for o in members),
                 "stopped_early": sum(o.status == "stopped early" for o in members),
                 "wall_s": round(sum(o.wall_s or 0.0 for o in members), 1), "values": values}
        if values:
            expert = ran[0].rows[0].get("Initial_DataCollection_AverageReturn")
            entry.update(summarize(values), iterations=max(o.rows[-1]["Iteration"] for o in ran) + 1, expert=expert)
            if expert and metric.endswith("AverageReturn"):
                entry["pct_expert"] = 100 * entry["mean"] / expert
        summary.append(entry)
    return summary


def _setting_text(setting: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "-"


CSV_COLUMNS = ("env_name", "algo", "exp_name", "setting", "n", "expert", "mean", "std", "iqm", "iqm_ci_low",
               "iqm_ci_high", "pct_expert", "iterations", "wall_s", "trials", "failed", "stopped_early")
COLUMNS = ("task", "algo", "setting", "seeds", "expert", "mean ± std", "IQM [95% CI]", "% of expert", "iterations",
           "trial time")


def _cells(g: dict) -> list[str]:
    head, wall = [g["env_name"], g["algo"], _setting_text(g["setting"]), str(g.get("n", 0))], f"{g['wall_s']:.0f} s"
    if "n" not in g:
        return [*head, "", "", "", "", "", wall]
    return [*head, f"{g['expert']:.0f}" if g.get("expert") is not None else "", f"{g['mean']:.1f} ± {g['std']:.1f}",
            f"{g['iqm']:.1f} [{g['iqm_ci_low']:.1f}, {g['iqm_ci_high']:.1f}]",
            f"{g['pct_expert']:.0f}%" if "pct_expert" in g else "", str(g["iterations"]), wall]


def render_summary(summary: list[dict], outcomes: list[Outcome], metric: str) -> str:
    lines = [f"# Sweep summary: {metric} at the final iteration", "",
             "Over seeds: mean ± std, interquartile mean with a 95% bootstrap interval (rliable); "
             "trial time is the trials' wall time, added up.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(g)) + " |" for g in summary]
    bad = [o for o in outcomes if o.status != "finished"]
    if bad:
        lines += ["", "## Trials that did not finish", ""]
        lines += [f"- `{o.trial.key}`: {o.status}" + (f": {o.error}" if o.error else "") for o in bad]
    if len({o.node["id"] for o in outcomes if o.node}) > 1:  # run directories on the disks of several nodes
        lines += ["", "## Run directories (node: path)", ""]
        lines += [f"- `{o.trial.key}`: {o.node['ip']} (node {o.node['id'][:8]}): {o.run_dir}" for o in outcomes if o.node]
    return "\n".join(lines) + "\n"


def make_plots(outcomes: list[Outcome], summary: list[dict], out: Path, metric: str) -> None:
    """Learning curves, the final metric vs each swept numeric setting, and a performance profile across tasks."""
    from bcjax.run.plots import Run, plot_hparam, plot_learning_curves

    runs = [Run(Path(o.run_dir or o.trial.key), config_dict(o.trial.config), o.rows) for o in outcomes if o.rows]
    if not runs:
        return
    plots = out / "plots"
    plot_learning_curves(runs, plots / "learning_curves.png", metric)
    swept = list(dict.fromkeys(k for o in outcomes for k in o.trial.setting))
    for name in swept:
        if all(isinstance(r.config.get(name), (int, float)) and not isinstance(r.config[name], bool) for r in runs):
            plot_hparam(runs, name, plots / f"{name}.png", metric, split_by=[s for s in swept if s != name] or None)
    if metric.endswith("AverageReturn"):
        plot_performance_profile(summary, plots / "performance_profile.png", metric)


def plot_performance_profile(summary: list[dict], path: Path, metric: str) -> Path | None:
    """Fraction of runs above each fraction of the expert's return, per algorithm × setting across tasks
    (rliable's score distribution with a stratified-bootstrap band); methods need seeds on every task."""
    from matplotlib.figure import Figure

    from bcjax.run.stats import performance_profiles

    methods: dict[str, dict[str, list[float]]] = {}
    for g in summary:
        if g.get("expert"):
            label = f"{'DAgger' if g['algo'] == 'dagger' else 'BC'} {_setting_text(g['setting'])}".replace(" -", "")
            methods.setdefault(label, {}).setdefault(g["env_name"], []).extend(v / g["expert"] for v in g["values"])
    tasks = sorted({t for m in methods.values() for t in m})
    scores = {}
    for label, per_task in methods.items():
        n = min(len(v) for v in per_task.values())
        if set(per_task) == set(tasks) and n > 0:
            scores[label] = np.array([per_task[t][:n] for t in tasks]).T  # runs × tasks
    if not scores:
        return None
    pooled = np.concatenate([s.ravel() for s in scores.values()])
    taus = np.linspace(min(0.0, pooled.min()), max(1.2, pooled.max() * 1.05), 61)
    profiles, cis = performance_profiles(scores, taus)
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for label in scores:
        ax.plot(taus, profiles[label], label=label)
        ax.fill_between(taus, cis[label][0], cis[label][1], alpha=0.2)
    ax.set(xlabel=f"{metric} / expert's (fraction of the expert data's return)", title="Performance profile",
           ylabel=f"fraction of runs above (across {len(tasks)} task{'s' * (len(tasks) > 1)})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def repo_relative(token: str) -> str:
    """A path in a command or a summary, relative to the repository (as a user types it from a clone):
    what a run leaves behind names no directory of the machine that made it."""
    return os.path.relpath(token, REPO) if os.path.isabs(token) else token


def write_summary(outcomes: list[Outcome], out: Path, metric: str = "Eval_AverageReturn") -> list[dict]:
    """summary.md, summary.csv, summary.json and plots/ in `out`; returns the per-group summary."""
    import pandas as pd  # installed with rliable (bcjax[stats]), which a sweep checks for before it starts

    summary = summarize_groups(outcomes, metric)
    (out / "summary.md").write_text(render_summary(summary, outcomes, metric))
    rows = [{**g, "setting": _setting_text(g["setting"])} for g in summary]
    pd.DataFrame(rows, columns=CSV_COLUMNS, dtype=object).to_csv(out / "summary.csv", index=False)
    trials = [{"key": o.trial.key, "env_name": o.trial.config.env_name, "algo": o.trial.config.algo,
               "setting": o.trial.setting, "seeds": list(o.trial.seeds), "status": o.status, "error": o.error,
               "run_dir": o.run_dir and repo_relative(o.run_dir), "node": o.node, "wall_s": o.wall_s,
               "train_flags": [repo_relative(t) for t in config_argv(o.trial.config)]} for o in outcomes]
    (out / "summary.json").write_text(json.dumps({"metric": metric, "groups": summary, "trials": trials}, indent=1) + "\n")
    make_plots(outcomes, summary, out, metric)
    return summary
