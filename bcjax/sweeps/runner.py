"""Trials on Ray Tune: each one bcjax run (`bcjax.run.main.run`, in-process in a Ray worker that Tune keeps for the
next trial, with its imports and compiled programs) that reports every logged iteration (`tune.report`) and writes
its normal run directory, and its output in `trial.log`, under `<out>/runs/<trial>/` (with --storage: under Tune's
trial directory, which Tune copies to the storage). A driver-side callback appends every completed trial, with its
rows, to `<out>/trials.jsonl`: a later sweep in the same --out (the same grid, or one grown from it) runs the others."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bcjax.data.files import check_writable_dir
from bcjax.errors import BcjaxError
from bcjax.run.config import config_dict, config_from_dict
from bcjax.sweeps.trials import SweepArgs, Trial

EXTRA = "pip install -e '.[sweep]'"
REPO = Path(__file__).resolve().parents[2]  # the clone holding this bcjax
TERMINATED = threading.Event()  # the sweep got SIGTERM (it exits 143)
_watchdogs: list[subprocess.Popen] = []  # held open as long as this process lives


@dataclass
class Outcome:
    """What became of one trial: its status, the error of a failed one, and its reported rows."""
    trial: Trial
    status: str  # finished, failed, stopped early (by the scheduler), unfinished (the sweep was interrupted first)
    error: str | None = None
    rows: list[dict] = field(default_factory=list)  # bcjax metrics rows (Iteration, metrics, per_seed)
    run_dir: str | None = None
    wall_s: float | None = None
    node: dict | None = None  # the Ray node that ran it: {"ip", "id"}


def require_ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import tune
    except ImportError as e:
        raise BcjaxError(f"sweeps need Ray Tune ({e}): {EXTRA}") from None
    return ray, tune


def start_ray(address: str | None, num_cpus: int | None = None) -> None:
    """A Ray of its own on this machine's cores, which dies with this process, or the cluster at `address`."""
    ray, _ = require_ray()
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a sweep unless asked for
    if address:
        _connect(ray, address)
    else:
        # The workers import the same bcjax as this process (also when it runs from a clone without installing).
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        # address="local": a Ray of its own, never one that runs (or ran: ray_current_cluster) on this machine
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
        # Ray's agents outlive a killed driver: a watchdog kills them once this process is gone, however it ends.
        _watchdogs.append(subprocess.Popen([sys.executable, str(Path(__file__).with_name("watchdog.py")),
                                            str(os.getpid())], stdin=subprocess.PIPE, start_new_session=True))
    signal.signal(signal.SIGTERM, _on_sigterm)  # after ray.init, whose own handler only dumps a stack


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM stops the sweep as Ctrl-C does (Tune stops its trials and keeps what finished): exit 143."""
    TERMINATED.set()
    signal.raise_signal(signal.SIGINT)


def _connect(ray: Any, address: str) -> None:
    """Join the cluster at `address` once it answers, or one line naming what to check (Ray retries for ever)."""
    from ray._private.services import canonicalize_bootstrap_address_or_die

    client = address.startswith("ray://")
    if client and importlib.util.find_spec("grpc") is None:
        raise BcjaxError(f"--address {address} needs Ray Client: pip install 'ray[client]' "
                         "(or run sweep.py on the head node with --address auto)")
    try:  # auto: the cluster `ray start` recorded on this machine
        host, _, port = (address[len("ray://"):] if client else canonicalize_bootstrap_address_or_die(address)).rpartition(":")
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except (OSError, ValueError) as e:  # no cluster recorded for auto is a ConnectionError, an OSError
        raise BcjaxError(f"no Ray cluster answers at --address {address} ({e}): check that Ray runs there (ray start "
                         "--head; ray status), the host and port (the head's GCS port, 6379 by default; ray:// takes "
                         "Ray Client's, 10001) and the firewall between") from None
    ray.init(address=address, log_to_driver=False)


def trial_slots(cpus_per_trial: float) -> int:
    ray, _ = require_ray()
    return max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_trial))


def run_trial(config: dict) -> None:
    """Tune's trainable: one bcjax run, every logged iteration reported with tune.report."""
    import ray
    from ray import tune

    from bcjax.run.main import run

    start = time.time()
    # Trials may share a GPU (fractional --gpus_per_trial): no trial takes all its memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    key, storage = config["trial"]["key"], config["storage"]
    logdir = Path.cwd() if storage else Path(config["out"]) / "runs" / key  # Tune's trial directory is the cwd
    # A trial that starts again (a resumed sweep, a retried failure) starts from nothing: the
    # run directories of its unfinished attempt go (the expert-data cache stays).
    for d in logdir.glob("q[12]_*"):
        shutil.rmtree(d, ignore_errors=True)
    node = ray.get_runtime_context().get_node_id()

    def report(row: dict, run_dir: Path) -> None:
        where = f"{storage}/{key}/{run_dir.name}" if storage else str(run_dir)
        tune.report({**row, "run_dir": where, "node_id": node, "wall_s": time.time() - start})

    cfg = config_from_dict(config["trial"]["config"]).replace(logdir=str(logdir))
    logdir.mkdir(parents=True, exist_ok=True)
    # The sweep's terminal shows Tune's status; the trial's own output stays with its run.
    with open(logdir / "trial.log", "w") as log, redirect_stdout(log), redirect_stderr(log):
        run(cfg, on_row=report, limit_threads=True)  # a trial owns its Ray worker process, as train.py owns its own


def storage_of(opts: SweepArgs) -> tuple[str, str]:
    """Tune's storage_path and experiment name: --storage and the name of the --out folder, else --out and
    "tune" (checked before Ray starts: a local folder must be writable, a URI one pyarrow knows)."""
    out = Path(opts.out).resolve()
    if opts.storage is None:
        return str(out), "tune"
    if "://" not in opts.storage:
        check_writable_dir(Path(opts.storage), "--storage")
        return str(Path(opts.storage).resolve()), out.name
    import pyarrow.fs

    try:
        pyarrow.fs.FileSystem.from_uri(opts.storage)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise BcjaxError(f"--storage {opts.storage}: {e}") from None
    return opts.storage.rstrip("/"), out.name


def run_sweep(trials: list[Trial], opts: SweepArgs) -> list[Outcome]:
    """Run the trials on Ray Tune, but for those that completed in an earlier sweep in `opts.out` of which this
    one is a superset, and return every trial's outcome; a failed trial is an outcome, not an exception."""
    _, tune = require_ray()
    (storage_path, name), out = storage_of(opts), Path(opts.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    state, done_file = out / "sweep.json", out / "trials.jsonl"
    definition = [{"key": t.key, "setting": t.setting, "config": config_dict(t.config)} for t in trials]
    before = json.loads(state.read_text())["trials"] if state.is_file() else []
    if missing := [d["key"] for d in before if d not in definition]:
        raise BcjaxError(f"{out} holds a different sweep (its trial {missing[0]} is not in this one): pass a new "
                         "--out, or the same flags as before (to resume it) with more seeds or settings (to grow it)")
    state.write_text(json.dumps({"trials": definition}, indent=1) + "\n")
    todo = [d for d in definition if d["key"] not in _completed(done_file)]
    if before:
        print(f"resuming the sweep in {out}: {len(definition) - len(todo)} completed trial(s) kept, "
              f"{len(todo)} to run (delete {out} to start over)")
    recorder, errors = _recorder(done_file, opts.metric), {}
    if todo:
        start_ray(opts.address, opts.num_cpus)
        trainable = tune.with_resources(run_trial, {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})
        run_config = tune.RunConfig(name=name, storage_path=storage_path, verbose=opts.verbose, callbacks=[recorder],
                                    sync_config=tune.SyncConfig(sync_artifacts=opts.storage is not None))
        storage = f"{storage_path}/{name}" if opts.storage else None  # where Tune copies each trial's directory
        tuner = tune.Tuner(trainable, param_space={"out": str(out), "storage": storage, "trial": tune.grid_search(todo)},
                           tune_config=_tune_config(trials, opts), run_config=run_config)
        if not opts.verbose:  # a failed trial is a line here, its error in the summary, its traceback in error.txt
            logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
        errors = {_key(r): _one_line(r.error) for r in tuner.fit() if r.error is not None}
    done = _completed(done_file)
    return [_outcome(t, done.get(t.key), errors.get(t.key), recorder.rows.get(t.key, [])) for t in trials]


def _tune_config(trials: list[Trial], opts: SweepArgs) -> Any:
    """Tune's settings of a sweep: the scheduler, concurrency, trials named by their keys, and warm workers
    (a trial reuses a finished one's Ray worker, its imports and compiled programs, instead of starting one)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    asha = opts.scheduler == "asha"
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(t.config.n_iter for t in trials),
                              grace_period=opts.grace_period, reduction_factor=2) if asha else None
    return tune.TuneConfig(scheduler=scheduler, metric=opts.metric if asha else None, mode=opts.mode if asha else None,
                           max_concurrent_trials=opts.max_concurrent, trial_name_creator=_key, trial_dirname_creator=_key,
                           reuse_actors=True)


def _key(trial: Any) -> str:  # a Tune trial's bcjax key
    return trial.config["trial"]["key"]


def _completed(path: Path) -> dict[str, dict]:
    """The completed trials' records in `path` (a torn last line, from a killed sweep, is skipped)."""
    records = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        records[record["key"]] = record
    return records


def _recorder(path: Path, metric: str) -> Any:
    """A Tune callback (run in the sweep's process) printing a line as a trial starts and completes (Tune prints
    its errors) and keeping each trial's bcjax rows as it reports them; a trial that completes (finished, or
    stopped by the scheduler) is appended to `path` with its rows, node and run directory."""
    from ray import tune

    class Recorder(tune.Callback):
        def __init__(self) -> None:
            self.rows: dict[str, list[dict]] = {}
            self.last: dict[str, dict] = {}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.rows[_key(trial)] = []
            print(f"trial {_key(trial)}: started", flush=True)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.last[_key(trial)] = result
            bcjax = {k: v for k, v in result.items() if k in ("Iteration", "per_seed") or k in result["per_seed"]}
            self.rows[_key(trial)].append(bcjax)  # without Tune's bookkeeping

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            key = _key(trial)
            last = self.last.get(key, {})
            record = {"key": key, "rows": self.rows.get(key, []), "run_dir": last.get("run_dir"),
                      "wall_s": last.get("wall_s"), "node": {"ip": last.get("node_ip"), "id": last.get("node_id")}}
            with path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            final = f"{metric} {last[metric]:.1f} at iteration {last['Iteration']}, " if metric in last else ""
            print(f"trial {key}: completed, {final}{last.get('wall_s', 0):.1f} s on {last.get('node_ip')}", flush=True)

    return Recorder()


def _one_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error  # Ray wraps the trial's exception
    text = str(cause).strip().splitlines()
    return (text[-1] if text else "") if isinstance(cause, BcjaxError) else f"{type(cause).__name__}: {' '.join(text)}"


def _outcome(trial: Trial, record: dict | None, error: str | None, rows: list[dict]) -> Outcome:
    """What became of the trial: completed (`record`, from trials.jsonl), failed with `error`, or unfinished."""
    if record is None:
        return Outcome(trial, "failed" if error else "unfinished", error, rows)
    cfg = trial.config
    last_logged = (cfg.n_iter - 1) // cfg.scalar_log_freq * cfg.scalar_log_freq
    finished = record["rows"] and record["rows"][-1]["Iteration"] == last_logged
    return Outcome(trial, "finished" if finished else "stopped early", None, record["rows"], record["run_dir"],
                   record["wall_s"], record["node"])
