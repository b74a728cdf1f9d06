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
from typing import Any

from bcjax.errors import BcjaxError
from bcjax.run.config import config_dict, config_from_dict
from bcjax.run.logger import read_metrics
from bcjax.sweeps.trials import SweepArgs, Trial

EXTRA = "pip install -e '.[sweep]'"
REPO = Path(__file__).resolve().parents[2]  # the clone holding this bcjax


@dataclass
class Outcome:
    """What became of one trial: its status, the error of a failed one, and its reported rows."""
    trial: Trial
    status: str  # finished, failed, stopped early (by the scheduler), unfinished (the sweep was interrupted first)
    error: str | None = None
    rows: list[dict] = field(default_factory=list)  # bcjax metrics rows (Iteration, metrics, per_seed)
    run_dir: str | None = None
    wall_s: float | None = None


def require_ray() -> tuple[Any, Any]:
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
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    # address="local": a Ray of its own, never one that runs (or ran: ray_current_cluster) on this machine
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=True,
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
    state, exp_dir = out / "sweep.json", str(out / "tune")
    definition = [{"key": t.key, "setting": t.setting, "config": config_dict(t.config)} for t in trials]
    if state.is_file() and json.loads(state.read_text())["trials"] != definition:
        raise BcjaxError(f"{out} holds a different sweep: pass a new --out (or the same flags as before to resume it)")
    state.write_text(json.dumps({"trials": definition}, indent=1) + "\n")
    start_ray(opts.address, opts.num_cpus)
    trainable = tune.with_resources(run_trial, {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})
    if tune.Tuner.can_restore(exp_dir):
        print(f"resuming the sweep in {out}: finished trials are kept, the others run (delete {out} to start over)")
        tuner = tune.Tuner.restore(exp_dir, trainable, resume_unfinished=True, restart_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space={"out": str(out), "trial": tune.grid_search(definition)},
                           tune_config=_tune_config(trials, opts),
                           run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=opts.verbose))
    results = {r.config["trial"]["key"]: r for r in tuner.fit()}
    statuses = {t.config["trial"]["key"]: t.status for t in tune.ExperimentAnalysis(exp_dir).trials}
    return [_outcome(t, results[t.key], statuses.get(t.key)) if t.key in results else Outcome(t, "unfinished")
            for t in trials]


def _tune_config(trials: list[Trial], opts: SweepArgs) -> Any:
    """Tune's settings of a new sweep: the scheduler, concurrency, and trials named by their keys."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    def name(t: Any) -> str:
        return t.config["trial"]["key"]

    asha = opts.scheduler == "asha"
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(t.config.n_iter for t in trials),
                              grace_period=opts.grace_period, reduction_factor=2) if asha else None
    return tune.TuneConfig(scheduler=scheduler, metric=opts.metric if asha else None, mode=opts.mode if asha else None,
                           max_concurrent_trials=opts.max_concurrent, trial_name_creator=name, trial_dirname_creator=name)


def _one_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error  # Ray wraps the trial's exception
    text = str(cause).strip().splitlines()
    return (text[-1] if text else "") if isinstance(cause, BcjaxError) else f"{type(cause).__name__}: {' '.join(text)}"


def _outcome(trial: Trial, result: Any, tune_status: str | None) -> Outcome:
    """What became of the trial (`result`: its tune.Result), with the bcjax rows of the run directory its last
    report names: only the last attempt's (run_trial starts a retried trial's directory afresh)."""
    last = result.metrics or {}
    logged = read_metrics(last["run_dir"]) if Path(last.get("run_dir", "-")).is_dir() else []
    rows = [{k: v for k, v in r.items() if k in ("Iteration", "per_seed") or k in r["per_seed"]} for r in logged]
    cfg = trial.config
    status = "unfinished"
    if result.error is not None or tune_status == "ERROR":
        status = "failed"
    elif tune_status == "TERMINATED":
        last_logged = (cfg.n_iter - 1) // cfg.scalar_log_freq * cfg.scalar_log_freq
        status = "finished" if rows and rows[-1]["Iteration"] == last_logged else "stopped early"
    error = _one_line(result.error) if result.error is not None else None
    return Outcome(trial, status, error, rows, last.get("run_dir"), last.get("wall_s"))
