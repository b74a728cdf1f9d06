"""The BC / DAgger run (CS285 RL_Trainer.run_training_loop), K seeds side by side.

`open_run` builds a run, in one place: the task's dimensions, the checks of the
expert and its data, the rollouts, the run directory with its lock and
logger, the learner (TrainStates, the device buffer, the compiled fit) and the
subscribers. `iterate` is the loop. An iteration is five phases: collect
(iteration 0: the expert data; later: `batch_size` env steps per seed with the
current policy, all seeds in one MuJoCo batch), relabel (the expert's actions), fit (the
rows into each seed's device buffer, then the iteration's updates as one
compiled call over all seeds), evaluate (its rows step in the same MuJoCo batch as the
next iteration's collection, whose policy it is) and record: each subscriber (the metrics
log, video, checkpoints) gets what the iteration produced, as Brax's progress_fn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState
from tqdm import tqdm

from bcjax.acting.envs import EnvInfo, env_info, make_env
from bcjax.acting.rollout import Trajectory, beta_at, episode_stats
from bcjax.acting.runner import Mixing, RolloutFailed, RolloutResult, Rollouts, RolloutTask, default_threads
from bcjax.core.buffer import Buffer, Inserter, add, compile_insert, empty, host_rows
from bcjax.core.devices import seed_sharding, shard_seeds
from bcjax.core.mlp import member_mean, merge_members
from bcjax.core.model import MLPPolicy, ensemble_policy, host_actor
from bcjax.core.update import Fit, compile_fit, create_train_states, with_obs_stats
from bcjax.errors import BcjaxError
from bcjax.run.checkpoint import LoopState, orbax, restore_resume, save_policy, save_resume
from bcjax.run.config import Config, config_dict
from bcjax.run.logger import BETA_METRICS, METRICS, RunLogger, run_directory, summary_line
from bcjax.run.perf import compile_seconds, peak_rss_mib
from bcjax.run.signals import Stopped, check_stop, stop_requested

Expert = Callable[[np.ndarray], np.ndarray]
# tags of _env_seed
ENV_COLLECT, ENV_EVAL, VIDEO_TRAIN, VIDEO_EVAL, VIDEO_NOISE, BETA_DRAWS, NOISE_COLLECT, NOISE_EVAL = range(8)
MAX_AUTO_ROWS = 8


@dataclass
class RunResult:
    policy: MLPPolicy  # what acts (Run.policy)
    states: TrainState  # K-stacked
    buffer: Buffer  # K-stacked, on the device
    rows: list[dict[str, list[float]]]  # per logged iteration: metric -> per-seed values
    losses: list[np.ndarray] = field(default_factory=list)  # per iteration: (K, num_steps) training losses
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase; compile: all JAX compilation
    peak_rss_mib: float = 0.0  # the process's peak resident memory when the run ended


# ---------------------------------------------------------------- checks of the inputs

def task_info(env_name: str) -> EnvInfo:
    with contextlib.closing(make_env(env_name)) as env:
        return env_info(env)


def check_expert_data(paths: list[Trajectory], info: EnvInfo) -> None:
    """The expert data must fit the task: a real mismatch is a clear error."""
    obs_dim, act = paths[0]["observation"].shape[1], paths[0]["action"]
    if obs_dim != info.obs_dim:
        raise BcjaxError(f"expert data has {obs_dim}-dim observations but {info.env_name} gives {info.obs_dim}: "
                         "use expert data recorded on this task (--expert_data) or the matching --env_name")
    if not info.discrete and (act.ndim != 2 or act.shape[1] != info.act_dim):
        raise BcjaxError(f"expert data has actions of shape {act.shape[1:]} but {info.env_name} takes {info.act_dim}: "
                         "use expert data recorded on this task")


def check_expert(expert: Expert, info: EnvInfo, obs: np.ndarray) -> None:
    out = np.asarray(getattr(expert, "mean_action_np", expert)(obs[:1]))  # numpy: a BC run compiles no expert
    want = (1,) if info.discrete else (1, info.act_dim)
    if out.shape != want:
        raise BcjaxError(f"the expert gives actions of shape {out.shape[1:]} but {info.env_name} takes {want[1:]}: "
                         "use the expert policy made for this task (--expert_policy_file)")


CHECK_EPISODES = 3  # a weak first check episode is judged by the best of this many


def check_expert_return(expert: Expert, cfg: Config, paths: list[Trajectory]) -> None:
    """One episode of the expert before training: far below its data's return means it does not fit the task
    (another task version, another observation layout), and a student would learn from it in silence. A fitting
    expert also stumbles now and then (the CS285 Ant expert, from some resets), so a weak episode is checked
    against the best of CHECK_EPISODES: a misfit is weak on all of them."""
    from bcjax.data.expert_data import collect_expert_paths

    data_return = float(np.mean([p["reward"].sum() for p in paths]))
    (ep,) = collect_expert_paths(expert, cfg.env_name, 1, cfg.seed, cfg.ep_len)
    got = float(ep["reward"].sum())
    what = f"one episode returns {got:.1f} in {len(ep['reward'])} steps"
    if weak := got < data_return - 0.5 * abs(data_return):  # the same env stream: its first episode is the one above
        got = max(float(e["reward"].sum()) for e in collect_expert_paths(expert, cfg.env_name, CHECK_EPISODES, cfg.seed,
                                                                         cfg.ep_len))
        weak, what = got < data_return - 0.5 * abs(data_return), f"{what}, the best of {CHECK_EPISODES} {got:.1f}"
    print(f"expert check: {what} (expert data: {data_return:.1f})")
    if weak and not cfg.allow_weak_expert:
        raise BcjaxError(f"the expert returns {got:.1f} on {cfg.env_name} (the best of {CHECK_EPISODES} episodes), under half "
                         f"of its data's {data_return:.1f}: it does not fit this task (another task version or observation "
                         "layout?); use the matching --env_name or expert, or pass --allow_weak_expert to train anyway")


# Copies of the parameters a run holds: the params, Adam's two moments, the gradients, and
# the host copies the rollouts use.
_PARAM_COPIES = 6


def buffer_capacity(cfg: Config, n_expert_rows: int, ep_len: int) -> int:
    """No more rows than the run can ever insert: a DAgger iteration adds < batch_size + ep_len."""
    most = n_expert_rows + (cfg.n_iter - 1) * (cfg.batch_size + ep_len - 1)
    return max(1, min(cfg.max_replay_buffer_size, most))


def run_memory_bytes(cfg: Config, info: EnvInfo, n_expert_rows: int) -> int:
    """A lower bound of the memory a run needs, for all of its seeds: the parameters (weights, biases and
    log_std of the MLP), and the replay buffer (one copy, on the device: observations and actions; with
    --normalize_obs its observations are also copied to the host for their statistics)."""
    sizes = [info.obs_dim] + [cfg.size] * cfg.n_layers + [info.act_dim]
    params = (sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:])) + info.act_dim) * 4 * _PARAM_COPIES
    capacity = buffer_capacity(cfg, n_expert_rows, cfg.ep_len or info.max_episode_steps)
    row = 4 * ((2 if cfg.normalize_obs else 1) * info.obs_dim + (1 if info.discrete else info.act_dim))
    return cfg.num_seeds * cfg.ensemble * (params + capacity * row)


def check_run_fits_memory(cfg: Config, info: EnvInfo, n_expert_rows: int) -> None:
    """Refuse a run that cannot fit in memory before it starts (a huge --size would allocate lazily and stall
    the process in swap or in a device transfer instead), saying how much it would need."""
    need, have = run_memory_bytes(cfg, info, n_expert_rows), os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > have:
        raise BcjaxError(f"this run needs at least {need / 2**30:.1f} GiB of memory (--size {cfg.size}, --n_layers "
                         f"{cfg.n_layers}, --num_seeds {cfg.num_seeds}, replay buffer), more than this machine's "
                         f"{have / 2**30:.1f} GiB: use a smaller --size, --n_layers, --num_seeds or --max_replay_buffer_size")


# ---------------------------------------------------------------- keys and host copies

def _env_seed(key: np.ndarray, tag: int) -> int:
    # Each phase reseeds its env and noise from the run's JAX key stream, so an iteration's rollouts depend only on
    # the keys and params (a resumed run repeats them without saving env RNG state).
    return int(np.random.SeedSequence([*key.tolist(), tag]).generate_state(1)[0])


def seed_index_keys(seed: int, num_seeds: int) -> jax.Array:
    """The root key of each of a run's seeds: seed index k of `--seed S` is fold_in(PRNGKey(S), k), so runs
    with different --seed never share a stream (PRNGKey(S + k) made --seed 1's index 1 equal --seed 2)."""
    return _index_keys(np.int32(seed), num_seeds)


@partial(jax.jit, static_argnums=1)
def _index_keys(seed: jax.Array, num_seeds: int) -> jax.Array:
    root = jax.random.PRNGKey(seed)
    return jax.vmap(partial(jax.random.fold_in, root))(jnp.arange(num_seeds))


@partial(jax.jit, static_argnums=1)
def _split(keys: jax.Array, n: int) -> tuple[jax.Array, ...]:
    """n arrays of K keys: each of the K keys split in n, in one program (eager, the split, its reshaping
    and unpacking compile several small ones)."""
    return tuple(jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k, n))(keys), 1, 0))


def _host(params: Any, members: int = 1) -> Any:
    """The policies' params on the host, an ensemble's members merged into the one MLP that acts for them."""
    return merge_members(jax.tree.map(np.asarray, jax.device_get(params)), members)


def _seed_params(params_host: object, k: int) -> object:
    return jax.tree.map(lambda x: x[k], params_host)


# ---------------------------------------------------------------- a run

@contextlib.contextmanager
def progress(desc: str, total: int, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A bar for one phase, only on an interactive terminal and without --quiet (tqdm's disable=None: off
    where stdout is not a terminal); `tick(n)` advances it."""
    with tqdm(total=total, desc=desc, unit="step", leave=False, file=sys.stdout, dynamic_ncols=True,
              disable=True if quiet else None) as bar:
        yield bar.update


@dataclass
class Run:
    """What the phases of every iteration read: built once, by `open_run`."""

    cfg: Config
    info: EnvInfo
    ep_len: int
    policy: MLPPolicy  # what acts: with --ensemble, the one MLP of its merged members (core.model.ensemble_policy)
    pool: Rollouts
    expert: Expert | None
    expert_paths: list[Trajectory]
    fit: Fit  # compiled: fit(states, buffer, keys)
    insert: Inserter  # compiled: one chunk of rows into the buffer
    seeds_on: Any  # the seed axis's sharding over local devices, or None (one device)
    first: LoopState  # what the loop starts from: nothing yet (iteration -1), or a resume point (its arrays
    # are donated to the first fit and insert)
    start: float  # the run's clock (a resumed run's starts in the past)
    compile_start: float
    run_dir: Path | None = None
    clock: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # seconds per phase, summed
    evals: EvalLog | None = None  # the metrics log: the first subscriber
    subscribers: list[Any] = field(default_factory=list)  # each called with every Iteration, in order
    checkpoint: Callable[[Iteration], None] | None = None  # the last subscriber (with a run directory)
    startup: dict[str, float] = field(default_factory=dict)  # seconds of building it, by part

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        t = time.time()
        try:
            yield
        finally:
            self.clock[phase] += time.time() - t

    def task(self, kind: str, k: int, params_np: Any, key: np.ndarray, noise: bool, steps: int,
             mix: Mixing | None = None) -> RolloutTask:
        # Every task seeds its env and noise from seed k's rollout key: it depends on nothing else.
        env_tag, noise_tag = (ENV_EVAL, NOISE_EVAL) if kind == "eval" else (ENV_COLLECT, NOISE_COLLECT)
        return RolloutTask(kind, k, self.cfg.env_name, self.rows(kind, steps), self.policy.spec,
                           _seed_params(params_np, k), _env_seed(key, env_tag),
                           _env_seed(key, noise_tag) if noise else None, steps, self.ep_len, mix)

    def rows(self, kind: str, steps: int) -> int:
        """Envs side by side per seed (results do not depend on it): the flag's, else as many as whole
        episodes of ep_len fit in the phase's steps (at most MAX_AUTO_ROWS), so none is run for nothing."""
        flag = self.cfg.eval_num_envs if kind == "eval" and self.cfg.eval_num_envs else self.cfg.num_envs
        return flag or max(1, min(MAX_AUTO_ROWS, steps // self.ep_len))


@contextlib.contextmanager
def open_run(cfg: Config, expert: Expert | None, paths: list[Trajectory], info: EnvInfo | None = None,
             logged: bool = False, on_row: Callable[[dict, Path], None] | None = None,
             print_fn: Callable[[str], None] = print, check_return: bool = False) -> Iterator[Run]:
    """The one place a run is built: the task's dimensions (`info`, made here if not given), the checks of the
    expert and its data (with `check_return`, also one episode of the expert), the memory check, the rollouts
    (their MuJoCo batch on --rollout_workers threads, by default one per core this process may use), with `logged` the run directory
    (new, or cfg.resume's), its lock and its logger, then the learner and the subscribers. Everything is closed
    again when the block ends (also on Ctrl-C and errors)."""
    start, compile_start = time.time(), compile_seconds()
    info = task_info(cfg.env_name) if info is None else info
    check_expert_data(paths, info)
    if expert is not None:
        check_expert(expert, info, paths[0]["observation"].astype(np.float32))
        if check_return:
            check_expert_return(expert, cfg, paths)
    check_run_fits_memory(cfg, info, sum(len(p["observation"]) for p in paths))
    checked = time.time()
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(Rollouts(default_threads() if cfg.rollout_workers is None else cfg.rollout_workers))
        logger = stack.enter_context(run_directory(cfg, on_row, print_fn)) if logged else None
        opened = time.time()
        run = _learner(cfg, info, expert, paths, pool, start, compile_start)
        run.startup = {"checks": checked - start, "run directory": opened - checked, "learner": time.time() - opened}
        run.run_dir, run.evals = logger and logger.run_dir, EvalLog(run, logger)
        run.subscribers = [run.evals]  # with a run directory also video (unless --video_log_freq -1), checkpoints
        if logger is not None:
            run.subscribers += [_video(run, logger)] if cfg.video_log_freq != -1 else []
            run.checkpoint = _checkpoints(run, logger.run_dir)
            run.subscribers.append(run.checkpoint)
        yield run


def _learner(cfg: Config, info: EnvInfo, expert: Expert | None, paths: list[Trajectory], pool: Rollouts,
             start: float, compile_start: float) -> Run:
    """The K policies, their device buffer and the loop's start (resumed with `cfg.resume`), compiled for."""
    k, ep_len = cfg.num_seeds * cfg.ensemble, cfg.ep_len or info.max_episode_steps  # seed s, member e: s * E + e
    policy = MLPPolicy(act_dim=info.act_dim, n_layers=cfg.n_layers, size=cfg.size, activation=cfg.activation,
                       discrete=info.discrete, init_scheme=cfg.init, normalize_obs=cfg.normalize_obs)

    def initial(seed: jax.Array) -> tuple[TrainState, jax.Array]:
        init_keys, loop_keys = _split(_index_keys(seed, k), 2)
        return create_train_states(policy, init_keys, info.obs_dim, *cfg.optimizer), loop_keys

    states, loop_keys = jax.jit(initial)(np.int32(cfg.seed))  # one program (a warm run loads one, not three)
    capacity = buffer_capacity(cfg, sum(len(p["observation"]) for p in paths), ep_len)
    act = ((), np.int32) if info.discrete else ((info.act_dim,), np.float32)
    buffer = empty(k, capacity, {"observation": ((info.obs_dim,), np.float32), "action": act})
    first = LoopState(-1, states, loop_keys, buffer, np.zeros(cfg.num_seeds, np.int64), 0.0)
    if cfg.resume:
        first = restore_resume(cfg.resume, first, cfg.resume_step)
        start -= first.elapsed
    seeds_on = seed_sharding(k)  # the K seeds split over the local devices (None: one device)
    states, loop_keys, buffer = shard_seeds((first.states, first.loop_keys, first.buffer), seeds_on)
    first = dataclasses.replace(first, states=states, loop_keys=loop_keys, buffer=buffer)
    # Compile now, once (the shapes never change), so no iteration compiles: the updates, the
    # buffer's insert, and the expert's relabelling batch.
    fit_fn = compile_fit(policy, cfg.train_batch_size, cfg.num_agent_train_steps_per_iter, states, buffer, loop_keys)
    insert_fn = compile_insert(buffer, seeds_on)
    if expert is not None and cfg.n_iter > 1:  # the relabelling batch, for DAgger's iterations
        expert(paths[0]["observation"][:2].astype(np.float32))
    return Run(cfg, info, ep_len, ensemble_policy(policy, cfg.ensemble), pool, expert, paths, fit_fn, insert_fn, seeds_on,
               first, start, compile_start)


# ---------------------------------------------------------------- the loop

@dataclass
class Collected:
    paths: list[list[Trajectory]]  # per seed
    steps: np.ndarray  # (K,) env steps taken
    stats: dict[str, list[float]]  # per-seed metrics of the collection itself (beta-mixing)


@dataclass
class Iteration:
    """What an iteration produced: what each subscriber gets."""

    itr: int
    loop: LoopState  # the carry after it: what a resume point saves
    got: Collected
    fit_metrics: dict[str, np.ndarray]  # (K, num_steps) each
    collect_params: Any  # the policy that collected its data, on the host
    params: Any  # the updated policy, on the host
    video_key: np.ndarray  # seed 0's rollout key of this iteration
    evaluation: list[Future] | None = None  # per seed, running in the pool; None when --scalar_log_freq skips it
    times: dict[str, float] = field(default_factory=dict)  # its phase times up to the evaluation
    stopping: bool = False  # a stop signal ends the run after it: its policy is saved


def iterate(run: Run) -> RunResult:
    """The iterations after `run.first`; a stop (a clear error, a signal) still logs what finished."""
    cfg, loop = run.cfg, run.first
    params, losses = _host(loop.states.params, cfg.ensemble), []  # the policy the next iteration collects with
    if run.checkpoint:  # orbax's import overlaps the first iteration instead of delaying the first save
        threading.Thread(target=orbax, daemon=True).start()
    try:
        for itr in range(loop.iteration + 1, cfg.n_iter):
            it = iteration(run, loop, params, itr)
            loop, params = it.loop, it.params
            losses.append(np.asarray(it.fit_metrics["loss"]))
            if itr < cfg.n_iter - 1 and stop_requested():  # SIGTERM/SIGINT: stop here, this iteration saved
                if run.checkpoint and not cfg.save_params:
                    it.stopping = True
                    run.checkpoint(it)  # the policy the run stops with
                check_stop(itr)
    except (BcjaxError, Stopped):
        with contextlib.suppress(BcjaxError):
            run.evals.flush(wait=True)  # what finished still gets logged when the run stops
        raise
    run.evals.flush(wait=True)
    timings = {**run.clock, "compile": compile_seconds() - run.compile_start, "total": time.time() - run.start}
    return RunResult(run.policy, loop.states, loop.buffer, run.evals.rows, losses, timings, peak_rss_mib())


def iteration(run: Run, loop: LoopState, collect_params: Any, itr: int) -> Iteration:
    """One iteration: collect, relabel, fit, evaluate, record."""
    before = dict(run.clock)
    loop_keys, train_keys, roll_keys = _split(loop.loop_keys, 3)
    roll_keys = np.asarray(roll_keys)  # each seed's rollout key, on the host: indexing it compiles nothing
    with run.timed("rollouts"):  # also steps the evaluation before it (bcjax.acting.runner.Rollouts)
        got = collect(run, itr, collect_params, roll_keys)
    if itr > 0:
        with run.timed("relabel"):
            relabel(run.expert, got.paths, np.int32 if run.info.discrete else np.float32)
    with run.timed("training"):
        states, buffer, fit_metrics = fit(run, loop.states, loop.buffer, got.paths, train_keys, itr)
    it = Iteration(itr, LoopState(itr, states, loop_keys, buffer, loop.envsteps + got.steps, loop.elapsed), got,
                   fit_metrics, collect_params, _host(states.params, run.cfg.ensemble), roll_keys[0])
    if run.cfg.scalar_log_freq != -1 and itr % run.cfg.scalar_log_freq == 0:
        it.times = {k: v - before.get(k, 0.0) for k, v in run.clock.items()}
        it.evaluation = evaluate(run, it.params, roll_keys)  # runs with the next collection, or when waited for
    for subscriber in run.subscribers:  # record
        subscriber(it)
    return it


def collect(run: Run, itr: int, params_np: Any, roll_keys: np.ndarray) -> Collected:
    """Iteration 0: the expert data. Later: `batch_size` env steps per seed with the current policy
    (with beta-mixing, some of them driven by the expert)."""
    cfg, k_seeds = run.cfg, run.cfg.num_seeds
    mixing = cfg.beta_schedule != "none"
    if itr == 0:  # the expert data: all of it the expert's
        ones = [1.0] * k_seeds
        return Collected([run.expert_paths] * k_seeds, np.zeros(k_seeds, np.int64),
                         {"Train_Beta": ones, "Train_ExpertStepFraction": ones} if mixing else {})
    mix = [None] * k_seeds
    if mixing:  # the expert drives some steps, on draws of their own: `none` consumes none
        beta = beta_at(cfg.beta_schedule, itr, 1.0 if cfg.beta0 is None else cfg.beta0, cfg.beta_decay or 1.0,
                       cfg.beta_iters or 1)
        mix = [Mixing(run.expert.mean_action_np, beta, _env_seed(roll_keys[k], BETA_DRAWS)) for k in range(k_seeds)]
    tasks = [run.task("collect", k, params_np, roll_keys[k], True, cfg.batch_size, mix[k]) for k in range(k_seeds)]
    with progress(f"itr {itr} collect", cfg.batch_size * k_seeds, cfg.quiet) as tick:
        results = wait_all(run.pool.submit(tasks), tick, cfg.batch_size)
    stats = {"Train_Beta": [beta] * k_seeds, "Train_ExpertStepFraction": [r.expert_steps / r.steps for r in results]
             } if mixing else {}
    return Collected([r.paths for r in results], np.array([r.steps for r in results]), stats)


def relabel(expert: Expert, paths_per_seed: list[list[Trajectory]], act_dtype: Any) -> None:
    """DAgger: every collected observation gets the expert's action (in place), one batch per seed."""
    for paths in paths_per_seed:
        labels = np.asarray(expert(np.concatenate([p["observation"] for p in paths])))
        offsets = np.cumsum([0] + [len(p["observation"]) for p in paths])
        for p, a, b in zip(paths, offsets[:-1], offsets[1:]):
            p["action"] = labels[a:b].astype(act_dtype)


def fit(run: Run, states: TrainState, buffer: Buffer, paths_per_seed: list[list[Trajectory]], train_keys: jax.Array,
        itr: int) -> tuple[TrainState, Buffer, dict]:
    """The rows into each seed's device buffer, then all of the iteration's updates for all seeds in one call."""
    rows = [{name: np.concatenate([p[name] for p in paths]) for name in ("observation", "action")} for paths in paths_per_seed
            for _ in range(run.cfg.ensemble)]  # each member of a seed gets its rows
    buffer = add(run.insert, buffer, rows, partial(shard_seeds, sharding=run.seeds_on))
    if run.cfg.normalize_obs:  # numpy's float64 statistics of the stored rows, as the host buffer gave them
        states = with_obs_stats(states, host_rows(buffer, "observation"))
    # also places what --normalize_obs gives back unsharded; nothing with one device
    states, train_keys = shard_seeds((states, train_keys), run.seeds_on)
    steps = run.cfg.num_agent_train_steps_per_iter
    with progress(f"itr {itr} train", steps, run.cfg.quiet) as tick:
        states, metrics = run.fit(states, buffer, train_keys)
        metrics = member_mean(jax.device_get(metrics), run.cfg.ensemble)  # per seed
        tick(steps)  # one fused call: the bar completes when it returns
    last_loss = np.asarray(metrics["loss"])[:, -1]
    if not np.all(np.isfinite(last_loss)):
        raise BcjaxError(f"training diverged (loss {last_loss}) at iteration {itr}: lower --learning_rate")
    return states, buffer, metrics


def evaluate(run: Run, params_np: Any, roll_keys: np.ndarray) -> list[Future]:
    """The evaluation of the updated policy: it steps with the next iteration's collection (the same policy's)."""
    cfg = run.cfg
    return run.pool.submit([run.task("eval", k, params_np, roll_keys[k], not cfg.deterministic_eval,
                                     cfg.eval_batch_size) for k in range(cfg.num_seeds)])


def wait_all(futures: list[Future], tick: Callable[[int], None], steps_each: int) -> list[RolloutResult]:
    """The futures' results in order; a failed rollout is a one-line error."""
    out = []
    for fut in futures:
        try:
            out.append(fut.result())
        except RolloutFailed as e:
            raise BcjaxError(f"{e}; the run directory keeps what was saved (--save_params runs can --resume)") from None
        tick(steps_each)
    return out


# ---------------------------------------------------------------- what an iteration produced: the subscribers

def _per_seed(stats: list[dict[str, float]]) -> dict[str, list[float]]:
    return {name: [s[name] for s in stats] for name in stats[0]}


def metrics_row(run: Run, it: Iteration, eval_paths: list[list[Trajectory]]) -> dict[str, list[float]]:
    """An iteration's metrics, per seed, in the CS285 order: the one place a row is made."""
    k = len(eval_paths)
    found = {**_per_seed([episode_stats(paths, "Eval") for paths in eval_paths]),
             **_per_seed([episode_stats(paths, "Train") for paths in it.got.paths]),
             "Train_EnvstepsSoFar": [float(n) for n in it.loop.envsteps],
             "Training Loss": [float(x) for x in np.asarray(it.fit_metrics["loss"])[:, -1]],
             "Initial_DataCollection_AverageReturn": [float(np.mean([p["reward"].sum() for p in run.expert_paths]))] * k,
             **it.got.stats, "TimeSinceStart": [time.time() - run.start] * k}
    if not run.info.discrete:  # sigma and the last minibatch's mean-action MSE: a collapsing sigma behind a
        std = np.exp(np.asarray(it.params["params"]["log_std"], np.float64))  # falling (negative) NLL shows
        for name, v in (("Training MSE", np.asarray(it.fit_metrics["mse"])[:, -1]), ("Policy_StdMean", std.mean(1)),
                        ("Policy_StdMin", std.min(1)), ("Policy_StdMax", std.max(1))):  # (std: K x act_dim)
            found[name] = [float(x) for x in v]
    return {name: found[name] for name in (*METRICS, *BETA_METRICS) if name in found}


class EvalLog:
    """The evaluations in flight; each is logged, in iteration order, once it and all before it are done."""

    def __init__(self, run: Run, logger: RunLogger | None) -> None:
        self.run, self.logger = run, logger
        self.pending: deque[Iteration] = deque()  # those with an evaluation in flight
        self.rows: list[dict[str, list[float]]] = []

    def __call__(self, it: Iteration) -> None:
        if it.evaluation is not None:
            self.pending.append(it)
        self.flush(wait=False)

    def flush(self, wait: bool) -> None:
        """Log the finished evaluations, oldest first; with `wait`, all of them."""
        cfg = self.run.cfg
        if wait:
            with self.run.timed("evaluation"):  # an evaluation waiting for a collection runs now, alone
                self.run.pool.finish()
        while self.pending and (wait or all(f.done() for f in self.pending[0].evaluation)):
            it = self.pending.popleft()
            with self.run.timed("evaluation"), progress(f"itr {it.itr} eval", cfg.eval_batch_size * cfg.num_seeds,
                                                        cfg.quiet) as tick:  # the loop's waits count as evaluation
                eval_paths = [r.paths for r in wait_all(it.evaluation, tick, cfg.eval_batch_size)]
            row = metrics_row(self.run, it, eval_paths)
            self.rows.append(row)
            if self.logger is not None:
                returns = [[float(p["reward"].sum()) for p in paths] for paths in eval_paths]
                self.logger.log_iteration(it.itr, row, {"Eval_EpisodeReturns": returns})
                self.logger.print(summary_line(it.itr, cfg.n_iter, row, it.times))


def _video(run: Run, logger: RunLogger) -> Callable[[Iteration], None]:
    """Every --video_log_freq iterations, videos of seed 0: the policy that collected the iteration's data
    (none at iteration 0, as in CS285) and the updated one, on seeds of their own, so a run with video has the
    same metrics as one without."""
    from bcjax.acting.video import VideoLogger

    video = VideoLogger(run.cfg.env_name, logger.run_dir, run.ep_len, writer=logger.writer)

    def record(it: Iteration) -> None:
        if it.itr % run.cfg.video_log_freq:
            return
        with run.timed("video"):
            noise = np.random.default_rng(_env_seed(it.video_key, VIDEO_NOISE))
            if it.itr > 0:
                video.log(it.itr, "train", host_actor(run.policy, _seed_params(it.collect_params, 0), noise),
                          _env_seed(it.video_key, VIDEO_TRAIN))
            eval_noise = None if run.cfg.deterministic_eval else noise
            video.log(it.itr, "eval", host_actor(run.policy, _seed_params(it.params, 0), eval_noise),
                      _env_seed(it.video_key, VIDEO_EVAL))
    return record


def _checkpoints(run: Run, run_dir: Path) -> Callable[[Iteration], None]:
    """The policy (every iteration with --save_params, else the last, or the one a stop signal ends on) and,
    with --save_params, the loop state for --resume, saved only after the iteration's metrics and all before are logged:
    a resume point never precedes its metrics, so a resumed run logs exactly the iterations that follow it."""
    cfg, info = run.cfg, run.info
    meta = {"config": config_dict(cfg), "env_name": cfg.env_name, "obs_dim": info.obs_dim, "act_dim": info.act_dim,
            "discrete": info.discrete, "num_seeds": cfg.num_seeds, "ep_len": run.ep_len}

    def record(it: Iteration) -> None:
        if not (cfg.save_params or it.itr == cfg.n_iter - 1 or it.stopping):
            return
        if cfg.save_params:
            run.evals.flush(wait=True)
        with run.timed("checkpoint"):
            save_policy(run_dir, it.itr, it.loop.states, meta)
            if cfg.save_params:
                save_resume(run_dir, dataclasses.replace(it.loop, elapsed=time.time() - run.start), meta)
    return record
