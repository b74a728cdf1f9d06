"""The BC / DAgger iteration loop (CS285 RL_Trainer.run_training_loop), K seeds side by side.

An iteration is five phases: collect (iteration 0: the expert data; later:
`batch_size` env steps per seed with the current policy, in the rollout pool),
relabel (the expert's actions), update (into each seed's ring buffer, then the
iteration's updates as one fused jitted call over all seeds), evaluate (started
in the pool: it runs while the next iteration collects and trains) and record
(video, checkpoint, and the metrics of every finished evaluation, in order).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from bcjax.acting.envs import EnvInfo, env_info, make_env
from bcjax.acting.pool import Mixing, RolloutPool, RolloutResult, RolloutTask, WorkerDied, default_workers
from bcjax.acting.rollout import Trajectory, beta_at, episode_stats
from bcjax.core.buffer import RingBuffer
from bcjax.core.devices import seed_sharding, shard_seeds
from bcjax.core.model import MLPPolicy, host_actor
from bcjax.core.update import compile_trainer, create_train_states, with_obs_stats
from bcjax.errors import BcjaxError
from bcjax.run.config import Config, config_dict
from bcjax.run.logger import BETA_METRICS, METRICS, RunLogger
from bcjax.run.perf import compile_totals, peak_rss_mib
from bcjax.run.progress import Progress, bars_wanted, summary_line
from bcjax.run.saved_run import LoopState, restore_resume, save_policy, save_resume
from bcjax.run.signals import Stopped, check_stop

Expert = Callable[[np.ndarray], np.ndarray]


@dataclass
class RunResult:
    policy: MLPPolicy
    states: TrainState  # K-stacked
    buffers: list[RingBuffer]
    rows: list[dict[str, list[float]]]  # per logged iteration: metric -> per-seed values
    losses: list[np.ndarray] = field(default_factory=list)  # per iteration: (K, num_steps) training losses
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase; compile: all JAX compilation
    peak_rss_mib: float = 0.0  # the process's peak resident memory when the run ended


def check_expert_data(paths: list[Trajectory], info: EnvInfo) -> None:
    """The expert data must fit the task: a real mismatch is a clear error."""
    obs_dim = paths[0]["observation"].shape[1]
    if obs_dim != info.obs_dim:
        raise BcjaxError(
            f"expert data has {obs_dim}-dim observations but {info.env_name} gives {info.obs_dim}: "
            "use expert data recorded on this task (--expert_data) or the matching --env_name"
        )
    act = paths[0]["action"]
    if not info.discrete and (act.ndim != 2 or act.shape[1] != info.act_dim):
        raise BcjaxError(
            f"expert data has actions of shape {act.shape[1:]} but {info.env_name} takes {info.act_dim}: "
            "use expert data recorded on this task"
        )


def check_expert(expert: Expert, info: EnvInfo, obs: np.ndarray) -> None:
    out = np.asarray(expert(obs[:1]))
    want = (1,) if info.discrete else (1, info.act_dim)
    if out.shape != want:
        raise BcjaxError(
            f"the expert gives actions of shape {out.shape[1:]} but {info.env_name} takes {want[1:]}: "
            "use the expert policy made for this task (--expert_policy_file)"
        )


def buffer_capacity(cfg: Config, n_expert_rows: int, ep_len: int) -> int:
    """No more rows than the run can ever insert: a DAgger iteration adds < batch_size + ep_len."""
    most = n_expert_rows + (cfg.n_iter - 1) * (cfg.batch_size + ep_len - 1)
    return max(1, min(cfg.max_replay_buffer_size, most))


def _numpy_rng(key: jax.Array) -> np.random.Generator:
    # Rollout noise comes from the run's JAX key stream, so runs repeat exactly.
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())


def _env_seed(key: jax.Array, tag: int) -> int:
    # Each phase reseeds its env from the key stream, so an iteration's rollouts depend only on
    # the keys and params (a resumed run repeats them without saving env RNG state).
    data = np.asarray(jax.random.key_data(key)).tolist()
    return int(np.random.SeedSequence([*data, tag]).generate_state(1)[0])


ENV_COLLECT, ENV_EVAL, VIDEO_TRAIN, VIDEO_EVAL, VIDEO_NOISE, BETA_DRAWS = range(6)  # tags of _env_seed


def seed_index_keys(seed: int, num_seeds: int) -> jax.Array:
    """The root key of each of a run's seeds: seed index k of `--seed S` is fold_in(PRNGKey(S), k), so runs
    with different --seed never share a stream (PRNGKey(S + k) made --seed 1's index 1 equal --seed 2)."""
    root = jax.random.PRNGKey(seed)
    return jnp.stack([jax.random.fold_in(root, k) for k in range(num_seeds)])


def fit_stats(params_host: Any, train_metrics: dict[str, np.ndarray], discrete: bool) -> dict[str, np.ndarray]:
    """Per seed: the policy's sigma (mean, min, max over action dims) and the last minibatch's mean-action MSE,
    so a collapsing sigma behind a falling (negative) NLL is visible."""
    if discrete:
        return {}
    std = np.exp(np.asarray(params_host["params"]["log_std"], np.float64))  # (K, act_dim)
    return {"Training MSE": np.asarray(train_metrics["mse"])[:, -1], "Policy_StdMean": std.mean(axis=1),
            "Policy_StdMin": std.min(axis=1), "Policy_StdMax": std.max(axis=1)}


def _seed_params(params_host: object, k: int) -> object:
    return jax.tree.map(lambda x: x[k], params_host)


@dataclass(frozen=True)
class Run:
    """What the phases of every iteration read: fixed for the whole run."""

    cfg: Config
    info: EnvInfo
    ep_len: int
    policy: MLPPolicy
    pool: RolloutPool
    expert: Expert | None
    progress: Progress
    start: float  # the run's clock (a resumed run's starts in the past)
    seeds_on: Any  # the seed axis's sharding over local devices, or None (one device)

    def task(self, kind: str, k: int, params_np: Any, env_seed: int, rng_state: dict | None, steps: int,
             mix: Mixing | None = None) -> RolloutTask:
        # Every task reseeds its env from seed k's key stream: it depends on nothing else.
        return RolloutTask(kind, k, self.cfg.env_name, self.cfg.num_envs, self.cfg.vector_mode,
                           self.policy.spec, _seed_params(params_np, k), env_seed, rng_state, steps,
                           self.ep_len, mix)


@dataclass
class Collected:
    paths: list[list[Trajectory]]  # per seed
    steps: np.ndarray  # (K,) env steps taken
    rng_states: list[dict]  # each seed's noise stream afterwards: evaluation continues it
    stats: dict[str, list[float]]  # per-seed metrics of the collection itself (beta-mixing)


@dataclass
class PendingEval:
    """An iteration's evaluation, running in the pool; `row` holds its metrics known at submission."""

    itr: int
    futures: list[Future]
    row: dict[str, list[float]]
    times: dict[str, float]  # the iteration's phase times, for its summary line


def collect(run: Run, itr: int, params_np: Any, roll_keys: jax.Array, expert_paths: list[Trajectory]) -> Collected:
    """Iteration 0: the expert data. Later: `batch_size` env steps per seed with the current policy
    (with beta-mixing, some of them driven by the expert)."""
    cfg, k_seeds = run.cfg, run.cfg.num_seeds
    rng_states = [_numpy_rng(roll_keys[k]).bit_generator.state for k in range(k_seeds)]
    mixing = cfg.beta_schedule != "none"
    if itr == 0:  # the expert data: all of it the expert's
        ones = [1.0] * k_seeds
        return Collected([expert_paths] * k_seeds, np.zeros(k_seeds, np.int64), rng_states,
                         {"Train_Beta": ones, "Train_ExpertStepFraction": ones} if mixing else {})
    mix = [None] * k_seeds
    if mixing:  # the expert drives some steps, on draws of their own: `none` consumes none
        beta = beta_at(cfg.beta_schedule, itr, 1.0 if cfg.beta0 is None else cfg.beta0, cfg.beta_decay or 1.0,
                       cfg.beta_iters or 1)
        mix = [Mixing(run.expert.mean_action_np, beta, _env_seed(roll_keys[k], BETA_DRAWS)) for k in range(k_seeds)]
    tasks = [run.task("collect", k, params_np, _env_seed(roll_keys[k], ENV_COLLECT), rng_states[k], cfg.batch_size,
                      mix[k]) for k in range(k_seeds)]
    with run.progress.phase(f"itr {itr} collect", cfg.batch_size * k_seeds) as tick:
        results = wait_all([run.pool.submit(t) for t in tasks], tick, cfg.batch_size)
    stats = {"Train_Beta": [beta] * k_seeds, "Train_ExpertStepFraction": [r.expert_steps / r.steps for r in results]
             } if mixing else {}
    return Collected([r.paths for r in results], np.array([r.steps for r in results]), [r.rng_state for r in results],
                     stats)


def relabel(expert: Expert, paths_per_seed: list[list[Trajectory]], act_dtype: Any) -> None:
    """DAgger: every collected observation gets the expert's action (in place), one batch per seed."""
    for paths in paths_per_seed:
        labels = np.asarray(expert(np.concatenate([p["observation"] for p in paths])))
        offsets = np.cumsum([0] + [len(p["observation"]) for p in paths])
        for p, a, b in zip(paths, offsets[:-1], offsets[1:]):
            p["action"] = labels[a:b].astype(act_dtype)


def update(run: Run, train_fn: Callable, states: TrainState, buffers: list[RingBuffer],
           paths_per_seed: list[list[Trajectory]], train_keys: jax.Array, itr: int) -> tuple[TrainState, dict]:
    """Add the data to each seed's buffer, then all of the iteration's updates for all seeds in one call."""
    for buf, paths in zip(buffers, paths_per_seed):
        buf.add_rollouts(paths)
    if run.cfg.normalize_obs:
        states = with_obs_stats(states, [b.arrays["observation"][:len(b)] for b in buffers])
    obs = jnp.asarray(np.stack([b.arrays["observation"] for b in buffers]))
    acs = jnp.asarray(np.stack([b.arrays["action"] for b in buffers]))
    sizes = jnp.asarray([len(b) for b in buffers], jnp.int32)
    # also places what --resume and --normalize_obs give back unsharded; nothing with one device
    states, train_keys, obs, acs, sizes = shard_seeds((states, train_keys, obs, acs, sizes), run.seeds_on)
    steps = run.cfg.num_agent_train_steps_per_iter
    with run.progress.phase(f"itr {itr} train", steps) as tick:
        states, metrics = train_fn(states, train_keys, obs, acs, sizes)
        metrics = jax.device_get(metrics)
        tick(steps)  # one fused call: the bar completes when it returns
    last_loss = np.asarray(metrics["loss"])[:, -1]
    if not np.all(np.isfinite(last_loss)):
        raise BcjaxError(f"training diverged (loss {last_loss}) at iteration {itr}: lower --learning_rate")
    return states, metrics


def evaluate(run: Run, itr: int, params_np: Any, roll_keys: jax.Array, rng_states: list[dict],
             row: dict[str, list[float]], times: dict[str, float]) -> PendingEval:
    """Start the evaluation of the updated policy in the pool: it runs while the next iteration works."""
    cfg = run.cfg
    futures = [run.pool.submit(run.task("eval", k, params_np, _env_seed(roll_keys[k], ENV_EVAL),
                                        None if cfg.deterministic_eval else rng_states[k], cfg.eval_batch_size))
               for k in range(cfg.num_seeds)]
    return PendingEval(itr, futures, row, times)


class EvalLog:
    """The evaluations in flight; each is logged, in iteration order, once it and all before it are done."""

    def __init__(self, run: Run, logger: RunLogger | None) -> None:
        self.run, self.logger = run, logger
        self.pending: deque[PendingEval] = deque()
        self.rows: list[dict[str, list[float]]] = []
        self.waited = 0.0  # seconds the loop stood waiting for evaluations

    def add(self, ev: PendingEval) -> None:
        self.pending.append(ev)
        self.flush(wait=False)

    def flush(self, wait: bool) -> None:
        """Log the finished evaluations, oldest first; with `wait`, all of them."""
        while self.pending and (wait or all(f.done() for f in self.pending[0].futures)):
            ev = self.pending.popleft()
            t = time.time()
            with self.run.progress.phase(f"itr {ev.itr} eval", self.run.cfg.eval_batch_size * len(ev.futures)) as tick:
                eval_paths = [r.paths for r in wait_all(ev.futures, tick, self.run.cfg.eval_batch_size)]
            self.waited += time.time() - t
            self._log(ev, eval_paths)

    def _log(self, ev: PendingEval, eval_paths: list[list[Trajectory]]) -> None:
        stats = [episode_stats(paths, "Eval") for paths in eval_paths]
        found = {**{name: [s[name] for s in stats] for name in stats[0]}, **ev.row,
                 "TimeSinceStart": [time.time() - self.run.start] * len(stats)}
        row = {name: found[name] for name in (*METRICS, *BETA_METRICS) if name in found}
        self.rows.append(row)
        if self.logger is not None:
            returns = [[float(p["reward"].sum()) for p in paths] for paths in eval_paths]
            self.logger.log_iteration(ev.itr, row, {"Eval_EpisodeReturns": returns})
            self.logger.print(summary_line(ev.itr, self.run.cfg.n_iter, row, ev.times))


def wait_all(futures: list[Future], tick: Callable[[int], None], steps_each: int) -> list[RolloutResult]:
    """The futures' results in order; a dead worker is a one-line error."""
    out = []
    for fut in futures:
        try:
            out.append(fut.result())
        except WorkerDied as e:
            raise BcjaxError(f"{e}; the run directory keeps what was saved (--save_params runs can --resume)") from None
        tick(steps_each)
    return out


def open_pool(cfg: Config) -> RolloutPool:
    """The run's rollout workers: --rollout_workers, by default one per core this process may use."""
    return RolloutPool(default_workers() if cfg.rollout_workers is None else cfg.rollout_workers)


def train(cfg: Config, expert: Expert | None, expert_paths: list[Trajectory],
          logger: RunLogger | None = None, pool: RolloutPool | None = None) -> RunResult:
    """Run BC (one iteration) or DAgger (`cfg.n_iter`) for `cfg.num_seeds` seeds.

    With a logger, videos and checkpoints go to its run directory; `cfg.resume` (that
    directory) continues after its last saved iteration with the saved buffers and keys.
    Rollouts run in `pool` (by default one opened for `cfg.rollout_workers` and closed at the end).
    """
    if pool is None:
        with open_pool(cfg) as own:
            return train(cfg, expert, expert_paths, logger, own)
    start = time.time()
    compile_start = compile_totals()[0]
    timings: dict[str, float] = defaultdict(float)
    k_seeds = cfg.num_seeds
    info_env = make_env(cfg.env_name)
    info = env_info(info_env)
    info_env.close()
    ep_len = cfg.ep_len or info.max_episode_steps
    check_expert_data(expert_paths, info)
    if expert is not None:
        check_expert(expert, info, expert_paths[0]["observation"].astype(np.float32))

    policy = MLPPolicy(act_dim=info.act_dim, n_layers=cfg.n_layers, size=cfg.size,
                       activation=cfg.activation, discrete=info.discrete, init_scheme=cfg.init,
                       normalize_obs=cfg.normalize_obs)
    seed_keys = seed_index_keys(cfg.seed, k_seeds)
    init_keys, loop_keys = jnp.moveaxis(jax.vmap(jax.random.split)(seed_keys), 1, 0)
    states = create_train_states(policy, init_keys, info.obs_dim, cfg.learning_rate)
    seeds_on = seed_sharding(k_seeds)  # the K seeds split over the local devices (None: one device)
    states, loop_keys = shard_seeds((states, loop_keys), seeds_on)

    n_expert_rows = sum(len(p["observation"]) for p in expert_paths)
    capacity = buffer_capacity(cfg, n_expert_rows, ep_len)
    act_shape, act_dtype = ((), np.int32) if info.discrete else ((info.act_dim,), np.float32)
    buffers = [RingBuffer(capacity, info.obs_dim, act_shape, act_dtype) for _ in range(k_seeds)]
    # Compile now, once per shape (the buffers' shapes never change), so no iteration compiles:
    # the updates, and the expert's relabelling batch.
    shape = partial(jax.ShapeDtypeStruct, sharding=seeds_on)
    train_fn = compile_trainer(policy, cfg.train_batch_size, cfg.num_agent_train_steps_per_iter, states, loop_keys,
                               shape((k_seeds, capacity, info.obs_dim), jnp.float32),
                               shape((k_seeds, capacity, *act_shape), act_dtype), shape((k_seeds,), jnp.int32),
                               per_step=cfg.per_step_updates)
    if expert is not None:
        expert(expert_paths[0]["observation"][:2].astype(np.float32))

    initial_return = float(np.mean([p["reward"].sum() for p in expert_paths]))
    envsteps = np.zeros(k_seeds, np.int64)
    loss_history: list[np.ndarray] = []
    run_dir = logger.run_dir if logger is not None else None
    meta = {"config": config_dict(cfg), "env_name": cfg.env_name, "obs_dim": info.obs_dim, "act_dim": info.act_dim,
            "discrete": info.discrete, "num_seeds": k_seeds, "ep_len": ep_len}
    first_itr = 0
    if cfg.resume:
        loop = restore_resume(cfg.resume, LoopState(-1, states, loop_keys, buffers, envsteps, 0.0), cfg.resume_step)
        states, loop_keys, envsteps, first_itr = loop.states, loop.loop_keys, loop.envsteps, loop.iteration + 1
        start -= loop.elapsed
    video = None
    if run_dir is not None and cfg.video_log_freq != -1:
        from bcjax.acting.video import VideoLogger

        video = VideoLogger(cfg.env_name, run_dir, ep_len, writer=logger.writer)
    run = Run(cfg, info, ep_len, policy, pool, expert, Progress(bars_wanted(cfg.quiet)), start, seeds_on)
    evals = EvalLog(run, logger)

    def timed(phase: str, fn: Callable, *args: Any) -> Any:
        t = time.time()
        out = fn(*args)
        timings[phase] += time.time() - t
        return out

    params_np = _host(states.params)  # the policy the next iteration collects with, on the host
    try:
        for itr in range(first_itr, cfg.n_iter):
            before = dict(timings)
            keys = jax.vmap(lambda k: jax.random.split(k, 3))(loop_keys)
            loop_keys, train_keys, roll_keys = keys[:, 0], keys[:, 1], keys[:, 2]
            collect_params = params_np

            got = timed("collection", collect, run, itr, collect_params, roll_keys, expert_paths)
            envsteps += got.steps  # every step taken
            if itr > 0:
                timed("relabel", relabel, expert, got.paths, act_dtype)
            states, train_metrics = timed("training", update, run, train_fn, states, buffers, got.paths,
                                          train_keys, itr)
            loss_history.append(np.asarray(train_metrics["loss"]))
            params_np = _host(states.params)
            if cfg.scalar_log_freq != -1 and itr % cfg.scalar_log_freq == 0:
                row = iteration_row(got, envsteps, loss_history[-1][:, -1], initial_return,
                                    fit_stats(params_np, train_metrics, info.discrete))
                times = {k: v - before.get(k, 0.0) for k, v in timings.items()}
                # (with --rollout_workers 0 the evaluation runs here, at once)
                evals.add(timed("evaluation", evaluate, run, itr, params_np, roll_keys, got.rng_states, row, times))

            # Record: a video of seed 0 (the policy that collected this iteration's data, none at
            # iteration 0, as in CS285, and the updated policy), on its own seeds so a run with video
            # has the same metrics as one without; then the checkpoints.
            if video is not None and itr % cfg.video_log_freq == 0:
                timed("video", film, video, run, itr, roll_keys[0], collect_params, params_np)
            if run_dir is not None and (cfg.save_params or itr == cfg.n_iter - 1):
                if cfg.save_params:  # a resume point never precedes its iteration's metrics
                    evals.flush(wait=True)
                loop = LoopState(itr, states, loop_keys, buffers, envsteps, time.time() - start) if cfg.save_params else None
                timed("checkpoint", save, run_dir, itr, states, meta, loop)
            if itr < cfg.n_iter - 1:
                check_stop(itr)  # SIGTERM/SIGINT: stop here, this iteration's checkpoint written
    except (BcjaxError, Stopped):
        with contextlib.suppress(BcjaxError):
            evals.flush(wait=True)  # what finished still gets logged when the run stops with a clear error
        raise
    evals.flush(wait=True)
    timings["evaluation"] += evals.waited  # the time the loop stood waiting for evaluations
    timings["compile"] = compile_totals()[0] - compile_start
    timings["total"] = time.time() - start
    return RunResult(policy=policy, states=states, buffers=buffers, rows=evals.rows, losses=loss_history,
                     timings=dict(timings), peak_rss_mib=peak_rss_mib())


def _host(params: Any) -> Any:
    return jax.tree.map(np.asarray, jax.device_get(params))


def iteration_row(got: Collected, envsteps: np.ndarray, last_loss: np.ndarray, initial_return: float,
                  fit: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Per seed: the metrics of an iteration other than its evaluation's."""
    train = [episode_stats(paths, "Train") for paths in got.paths]
    return {**{name: [s[name] for s in train] for name in train[0]},
            "Train_EnvstepsSoFar": [float(n) for n in envsteps], "Training Loss": [float(x) for x in last_loss],
            "Initial_DataCollection_AverageReturn": [initial_return] * len(envsteps),
            **{name: [float(x) for x in v] for name, v in fit.items()}, **got.stats}


def film(video: Any, run: Run, itr: int, key0: jax.Array, collect_params: Any, params_np: Any) -> None:
    noise = np.random.default_rng(_env_seed(key0, VIDEO_NOISE))
    if itr > 0:
        video.log(itr, "train", host_actor(run.policy, _seed_params(collect_params, 0), noise),
                  _env_seed(key0, VIDEO_TRAIN))
    eval_noise = None if run.cfg.deterministic_eval else noise
    video.log(itr, "eval", host_actor(run.policy, _seed_params(params_np, 0), eval_noise), _env_seed(key0, VIDEO_EVAL))


def save(run_dir: Path, itr: int, states: TrainState, meta: dict, loop: LoopState | None) -> None:
    """The policy (every iteration with --save_params, else the last) and, with --save_params,
    all the loop carries, for --resume."""
    save_policy(run_dir, itr, states, meta)
    if loop is not None:
        save_resume(run_dir, loop, meta)
