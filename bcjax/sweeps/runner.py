"""Trials on Ray Tune: each one bcjax run (`bcjax.run.main.run`, in-process in a Ray worker) that
reports every logged iteration (`tune.report`) and writes its normal run directory under
`<out>/runs/<trial>/`. Tune keeps its results and experiment state under `<out>/tune/`, which
lets an interrupted sweep resume without re-running finished trials."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from bcjax.errors import BcjaxError
from bcjax.run.config import config_dict, config_from_dict
from bcjax.sweeps.trials import SweepArgs, Trial

EXTRA = "pip install -e '.[sweep]'"


@dataclass
class Outcome:
    """What became of one trial: its status, the error of a failed one, and its reported rows."""
    trial: Trial
    status: str  # finished, failed, stopped early (by the scheduler), unfinished (the sweep was interrupted first)
    error: str | None = None
    rows: list[dict] = field(default_factory=list)  # bcjax metrics rows (Iteration, metrics, per_seed)
    run_dir: str | None = None
    wall_s: float | None = None


def require_ray():
    try:
        import ray
        from ray import tune
    except ImportError as e:
        raise BcjaxError(f"sweeps need Ray Tune ({e}): {EXTRA}") from None
    return ray, tune


def start_ray(address: str | None, num_cpus: int | None = None) -> None:
    """An embedded Ray on this machine's cores, or the cluster at `address` (auto, ray://HOST:10001)."""
    ray, _ = require_ray()
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a sweep unless asked for
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    # The workers import the same bcjax as this process (also when it runs from a clone without installing).
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": {"PYTHONPATH": path}})


def trial_slots(cpus_per_trial: float) -> int:
    ray, _ = require_ray()
    return max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_trial))


def run_trial(config: dict) -> None:
    """Tune's trainable: one bcjax run, every logged iteration reported with tune.report."""
    from ray import tune

    from bcjax.run.main import run

    start = time.time()
    # Trials may share a GPU (fractional --gpus_per_trial): no trial takes all its memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    logdir = Path(config["out"]) / "runs" / config["trial"]["key"]
    # A trial that starts again (a resumed sweep, a retried failure) starts from nothing: the
    # run directories of its unfinished attempt go (the expert-data cache stays).
    for d in logdir.glob("q[12]_*"):
        shutil.rmtree(d, ignore_errors=True)

    def report(row: dict, run_dir: Path) -> None:
        tune.report({**row, "run_dir": str(run_dir), "wall_s": time.time() - start})

    cfg = config_from_dict(config["trial"]["config"]).replace(logdir=str(logdir))
    run(cfg, on_row=report, limit_threads=True)  # a trial owns its Ray worker process, as train.py owns its own


def run_sweep(trials: list[Trial], opts: SweepArgs) -> list[Outcome]:
    """Run the trials on Ray Tune (resuming the sweep in `opts.out` if it holds this one) and
    return every trial's outcome; a failed trial is an outcome, not an exception."""
    _, tune = require_ray()
    out = Path(opts.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    state, exp_dir = out / "sweep.json", out / "tune"
    definition = [{"key": t.key, "setting": t.setting, "config": config_dict(t.config)} for t in trials]
    if state.is_file() and json.loads(state.read_text())["trials"] != definition:
        raise BcjaxError(f"{out} holds a different sweep: pass a new --out (or the same flags as before to resume it)")
    state.write_text(json.dumps({"trials": definition}, indent=1) + "\n")
    start_ray(opts.address, opts.num_cpus)
    trainable = tune.with_resources(run_trial, {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})
    if tune.Tuner.can_restore(str(exp_dir)):
        print(f"resuming the sweep in {out}: finished trials are kept, the others run (delete {out} to start over)")
        tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_unfinished=True, restart_errored=True)
    else:
        scheduler = None
        if opts.scheduler == "asha":
            from ray.tune.schedulers import ASHAScheduler

            scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(t.config.n_iter for t in trials),
                                      grace_period=opts.grace_period, reduction_factor=2)
        def name(t) -> str:
            return t.config["trial"]["key"]

        tuner = tune.Tuner(trainable, param_space={"out": str(out), "trial": tune.grid_search(definition)},
                           tune_config=tune.TuneConfig(
                               scheduler=scheduler, metric=opts.metric if scheduler else None,
                               mode=opts.mode if scheduler else None, max_concurrent_trials=opts.max_concurrent,
                               trial_name_creator=name, trial_dirname_creator=name),
                           run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=opts.verbose))
    grid = tuner.fit()
    statuses = {t.config["trial"]["key"]: t.status for t in tune.ExperimentAnalysis(str(exp_dir)).trials}
    by_key = {t.key: t for t in trials}
    outcomes = {}
    for result in grid:
        key = result.config["trial"]["key"]
        outcomes[key] = _outcome(by_key[key], result, statuses.get(key))
    return [outcomes.get(t.key, Outcome(t, "unfinished")) for t in trials]


def _one_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error  # Ray wraps the trial's exception
    text = str(cause).strip().splitlines()
    return (text[-1] if text else "") if isinstance(cause, BcjaxError) else f"{type(cause).__name__}: {' '.join(text)}"


def _outcome(trial: Trial, result, tune_status: str | None) -> Outcome:
    """The trial's bcjax rows as it reported them (from Tune's result.json) and what became of it."""
    reported = []
    result_file = Path(result.path) / "result.json"
    if result_file.is_file():
        reported = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        # A trial run again (a resumed sweep retries failed and unfinished ones) appends from iteration 0.
        starts = [i for i, r in enumerate(reported) if i == 0 or r.get("Iteration", 0) <= reported[i - 1].get("Iteration", 0)]
        reported = reported[starts[-1]:] if starts else reported
    rows = [{k: v for k, v in r.items() if k in ("Iteration", "per_seed") or k in r.get("per_seed", {})}
            for r in reported]
    last = reported[-1] if reported else {}
    cfg = trial.config
    last_logged = max(i for i in range(cfg.n_iter) if i % cfg.scalar_log_freq == 0)
    if result.error is not None or tune_status == "ERROR":
        status = "failed"
    elif tune_status == "TERMINATED":
        status = "finished" if rows and rows[-1]["Iteration"] == last_logged else "stopped early"
    else:
        status = "unfinished"
    error = _one_line(result.error) if result.error is not None else None
    return Outcome(trial, status, error, rows, last.get("run_dir"), last.get("wall_s"))
