"""The BC / DAgger iteration loop (CS285 RL_Trainer.run_training_loop), K seeds side by side.

Each iteration: collect (iteration 0: the expert data; later: `batch_size` env
steps with the current policy, relabelled by the expert), add to each seed's
ring buffer, run the iteration's updates as one fused jitted call over all
seeds, evaluate on `eval_batch_size` env steps, log.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from bcjax.buffer import RingBuffer
from bcjax.config import Config
from bcjax.devices import seed_sharding, shard_seeds
from bcjax.envs import EnvInfo, env_info, make_env
from bcjax.errors import BcjaxError
from bcjax.logger import BETA_METRICS, METRICS, RunLogger
from bcjax.perf import compile_totals, peak_rss_mib
from bcjax.policy import MLPPolicy, host_actor, policy_spec
from bcjax.progress import Progress, bars_wanted, summary_line
from bcjax.rollout import MixedActor, Trajectory, beta_at, episode_stats
from bcjax.rollout_pool import RolloutPool, RolloutResult, RolloutTask, WorkerDied, default_workers, run_task
from bcjax.saved_run import LoopState, config_dict, restore_resume, save_policy, save_resume
from bcjax.stop_signal import check_stop
from bcjax.update import compile_trainer, create_train_states, with_obs_stats

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


def run_rollouts(pool: RolloutPool, tasks: list[RolloutTask], tick: Callable[[int], None]) -> list[RolloutResult]:
    """The tasks' results in task order; they run side by side in the pool. A dead worker is a one-line error."""
    futures = [pool.submit(task) for task in tasks]
    results = []
    for task, fut in zip(tasks, futures):
        try:
            results.append(fut.result())
        except WorkerDied as e:
            raise BcjaxError(f"{e}; the run directory keeps what was saved (--save_params runs can --resume)") from None
        tick(task.min_steps)
    return results


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
    spec = policy_spec(policy)
    local_envs = None  # envs of the in-process beta-mixed collection

    def task(kind: str, k: int, params_np: Any, env_seed: int, rng_state: dict | None, steps: int) -> RolloutTask:
        # Every phase reseeds its env from the seed's key stream: a task depends on nothing else.
        return RolloutTask(kind, k, cfg.env_name, cfg.num_envs, cfg.vector_mode, spec, _seed_params(params_np, k),
                           env_seed, rng_state, steps, ep_len)
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
    rows: list[dict[str, list[float]]] = []
    loss_history: list[np.ndarray] = []

    run_dir = logger.run_dir if logger is not None else None
    meta = {"config": config_dict(cfg), "env_name": cfg.env_name, "obs_dim": info.obs_dim, "act_dim": info.act_dim,
            "discrete": info.discrete, "num_seeds": k_seeds, "ep_len": ep_len}
    first_itr = 0
    if cfg.resume:
        loop = restore_resume(cfg.resume, LoopState(-1, states, loop_keys, buffers, envsteps, 0.0), cfg.resume_step)
        states, loop_keys, envsteps, first_itr = loop.states, loop.loop_keys, loop.envsteps, loop.iteration + 1
        start -= loop.elapsed
    progress = Progress(bars_wanted(cfg.quiet))
    video = None
    if run_dir is not None and cfg.video_log_freq != -1:
        from bcjax.video import VideoLogger

        video = VideoLogger(cfg.env_name, run_dir, ep_len, writer=logger.writer)

    for itr in range(first_itr, cfg.n_iter):
        before = dict(timings)
        split = jax.vmap(lambda k: jax.random.split(k, 3))(loop_keys)
        loop_keys, train_keys, roll_keys = split[:, 0], split[:, 1], split[:, 2]
        rng_states = [_numpy_rng(roll_keys[k]).bit_generator.state for k in range(k_seeds)]
        params_host = collect_params = jax.tree.map(np.asarray, jax.device_get(states.params))

        # 1. Collect: the expert data first, then on-policy steps relabelled by the expert.
        t = time.time()
        mixing = cfg.beta_schedule != "none"
        beta = beta_at(cfg.beta_schedule, itr, 1.0 if cfg.beta0 is None else cfg.beta0, cfg.beta_decay or 1.0,
                       cfg.beta_iters or 1)
        mixed: dict[int, MixedActor] = {}
        if itr == 0:
            paths_per_seed = [expert_paths] * k_seeds
        else:
            with progress.phase(f"itr {itr} collect", cfg.batch_size * k_seeds) as tick:
                tasks = [task("collect", k, params_host, _env_seed(roll_keys[k], ENV_COLLECT), rng_states[k],
                              cfg.batch_size) for k in range(k_seeds)]
                if mixing:  # the expert acts too: in this process (workers hold no expert), the same task code
                    from bcjax.rollout_pool import _Envs

                    local_envs = local_envs or _Envs()
                    for k in range(k_seeds):  # its own draws, so --beta_schedule none consumes none
                        mixed[k] = MixedActor(None, expert.mean_action_np, beta,
                                              np.random.default_rng(_env_seed(roll_keys[k], BETA_DRAWS)))
                    collected = [run_task(t, local_envs, wrap=mixed[t.seed_index].around) for t in tasks]
                    tick(cfg.batch_size * k_seeds)
                else:
                    collected = run_rollouts(pool, tasks, tick)
            paths_per_seed = [r.paths for r in collected]
            envsteps += [r.steps for r in collected]  # all steps taken
            rng_states = [r.rng_state for r in collected]  # evaluation noise continues the stream
        timings["collection"] += time.time() - t
        if itr > 0:  # DAgger: every collected observation gets the expert's action.
            t = time.time()
            for paths in paths_per_seed:
                labels = np.asarray(expert(np.concatenate([p["observation"] for p in paths])))
                offsets = np.cumsum([0] + [len(p["observation"]) for p in paths])
                for p, a, b in zip(paths, offsets[:-1], offsets[1:]):
                    p["action"] = labels[a:b].astype(act_dtype)
            timings["relabel"] += time.time() - t
        for buf, paths in zip(buffers, paths_per_seed):
            buf.add_rollouts(paths)
        if cfg.normalize_obs:
            states = with_obs_stats(states, [b.arrays["observation"][:len(b)] for b in buffers])

        # 2. Train: all of the iteration's updates for all seeds in one call.
        t = time.time()
        obs = jnp.asarray(np.stack([b.arrays["observation"] for b in buffers]))
        acs = jnp.asarray(np.stack([b.arrays["action"] for b in buffers]))
        sizes = jnp.asarray([len(b) for b in buffers], jnp.int32)
        states, train_keys, obs, acs, sizes = shard_seeds((states, train_keys, obs, acs, sizes), seeds_on)
        with progress.phase(f"itr {itr} train", cfg.num_agent_train_steps_per_iter) as tick:
            states, train_metrics = train_fn(states, train_keys, obs, acs, sizes)
            train_metrics = jax.device_get(train_metrics)
            loss_history.append(np.asarray(train_metrics["loss"]))
            tick(cfg.num_agent_train_steps_per_iter)  # one fused call: the bar completes when it returns
        last_loss = loss_history[-1][:, -1]
        timings["training"] += time.time() - t
        if not np.all(np.isfinite(last_loss)):
            raise BcjaxError(f"training diverged (loss {last_loss}) at iteration {itr}: lower --learning_rate")

        # 3. Evaluate and log.
        params_host = jax.tree.map(np.asarray, jax.device_get(states.params))
        fit = fit_stats(params_host, train_metrics, info.discrete)
        per_seed: dict[str, list[float]] | None = None
        if cfg.scalar_log_freq != -1 and itr % cfg.scalar_log_freq == 0:
            t = time.time()
            per_seed = defaultdict(list)
            episode_returns = []
            with progress.phase(f"itr {itr} eval", cfg.eval_batch_size * k_seeds) as tick:
                evaluated = run_rollouts(pool, [
                    task("eval", k, params_host, _env_seed(roll_keys[k], ENV_EVAL),
                         None if cfg.deterministic_eval else rng_states[k], cfg.eval_batch_size)
                    for k in range(k_seeds)], tick)
                for k in range(k_seeds):
                    eval_paths = evaluated[k].paths
                    stats = {**episode_stats(eval_paths, "Eval"), **episode_stats(paths_per_seed[k], "Train"),
                             "Train_EnvstepsSoFar": float(envsteps[k]), "TimeSinceStart": time.time() - start,
                             "Training Loss": float(last_loss[k]),
                             "Initial_DataCollection_AverageReturn": initial_return,
                             **{name: float(v[k]) for name, v in fit.items()}}
                    if mixing:  # iteration 0's data is all the expert's
                        stats.update(Train_Beta=beta if itr else 1.0, Train_ExpertStepFraction=(
                            mixed[k].expert_steps / mixed[k].steps if itr else 1.0))
                    for name in (*METRICS, *BETA_METRICS):
                        if name in stats:
                            per_seed[name].append(stats[name])
                    episode_returns.append([float(p["reward"].sum()) for p in eval_paths])
            timings["evaluation"] += time.time() - t
            t = time.time()
            rows.append(dict(per_seed))
            if logger is not None:
                logger.log_iteration(itr, dict(per_seed), {"Eval_EpisodeReturns": episode_returns})
            timings["logging"] += time.time() - t

        # 4. Video of seed 0: the policy that collected this iteration's data (none at iteration 0,
        # which loads expert data, as in CS285) and the updated policy. Its own seeds, so a run with
        # video has the same metrics as one without.
        if video is not None and itr % cfg.video_log_freq == 0:
            t = time.time()
            key0 = roll_keys[0]
            noise = np.random.default_rng(_env_seed(key0, VIDEO_NOISE))
            if itr > 0:
                video.log(itr, "train", host_actor(policy, _seed_params(collect_params, 0), noise),
                          _env_seed(key0, VIDEO_TRAIN))
            eval_actor = host_actor(policy, _seed_params(params_host, 0), None if cfg.deterministic_eval else noise)
            video.log(itr, "eval", eval_actor, _env_seed(key0, VIDEO_EVAL))
            timings["video"] += time.time() - t

        # 5. Checkpoint: the policy (every iteration with --save_params, else the last), and
        # with --save_params all the loop carries, for --resume.
        if run_dir is not None and (cfg.save_params or itr == cfg.n_iter - 1):
            t = time.time()
            save_policy(run_dir, itr, states, meta)
            if cfg.save_params:
                save_resume(run_dir, LoopState(itr, states, loop_keys, buffers, envsteps, time.time() - start), meta)
            timings["checkpoint"] += time.time() - t
        if logger is not None:
            logger.print(summary_line(itr, cfg.n_iter, per_seed,
                                      {k: v - before.get(k, 0.0) for k, v in timings.items()}))
        if itr < cfg.n_iter - 1:
            check_stop(itr)  # SIGTERM/SIGINT: stop here, this iteration's checkpoint written

    timings["compile"] = compile_totals()[0] - compile_start
    timings["total"] = time.time() - start
    return RunResult(policy=policy, states=states, buffers=buffers, rows=rows, losses=loss_history,
                     timings=dict(timings), peak_rss_mib=peak_rss_mib())
