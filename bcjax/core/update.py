"""Jitted optax updates over an immutable TrainState, batched over a leading seed axis.

Every function here is pure. A run holds K policies stacked on axis 0 of every
array in the TrainState; the updates are vmapped over that axis, so K seeds
train in one call. `train_fused` runs a whole iteration's updates as one
`lax.scan` with minibatch indices drawn inside it; `compile_trainer(per_step=True)`
makes one jitted call per update (kept for comparison).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bcjax.core.devices import SEED_AXIS
from bcjax.core.loss import nll_loss
from bcjax.core.model import MLPPolicy, apply, init_params, obs_stats

Metrics = dict[str, jax.Array]  # name -> values


def create_train_states(policy: MLPPolicy, keys: jax.Array, obs_dim: int, learning_rate: float) -> TrainState:
    """K TrainStates stacked on axis 0 (one per key): own init, one Adam over all params."""
    tx = optax.adam(learning_rate)

    def one(key: jax.Array) -> TrainState:
        return TrainState.create(apply_fn=policy.apply, params=init_params(policy, key, obs_dim), tx=tx)

    # One compiled program: run eagerly, the vmapped init compiles dozens of small ops (~1.5 s on CPU).
    return jax.jit(jax.vmap(one))(keys)


def with_obs_stats(states: TrainState, obs_per_seed: list) -> TrainState:
    """The K-stacked states with each seed's obs_mean / obs_std set from its buffer's observation rows."""
    stats = [obs_stats(o) for o in obs_per_seed]
    params = dict(states.params)
    inner = dict(params["params"])
    inner["obs_mean"] = jnp.asarray(np.stack([m for m, _ in stats]))
    inner["obs_std"] = jnp.asarray(np.stack([s for _, s in stats]))
    params["params"] = inner
    return states.replace(params=params)


def minibatch_indices(key: jax.Array, size: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """`n` distinct rows drawn uniformly from [0, size), as the homework's `permutation(size)[:n]`
    (all `size` rows when size <= n), and a 0/1 weight marking the real rows.

    Positions that repeat an earlier one are redrawn until none does: the result is a uniform
    n-subset (the procedure commutes with every relabelling of the rows), at the cost of a few
    n x n comparisons instead of a permutation of the whole buffer at every update.
    """
    earlier = jnp.tril(jnp.ones((n, n), bool), -1)

    def repeats(idx: jax.Array) -> jax.Array:
        return jnp.any((idx[:, None] == idx[None, :]) & earlier, axis=1)

    def redraw(carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        key, idx = carry
        key, sub = jax.random.split(key)
        return key, jnp.where(repeats(idx), jax.random.randint(sub, (n,), 0, size), idx)

    key, sub = jax.random.split(key)
    few = size <= n
    idx = jnp.where(few, jnp.arange(n), jax.random.randint(sub, (n,), 0, size))
    _, idx = jax.lax.while_loop(lambda c: ~few & jnp.any(repeats(c[1])), redraw, (key, idx))
    return jnp.minimum(idx, size - 1), (idx < size).astype(jnp.float32)


def _adam_step(policy: MLPPolicy, state: TrainState, obs: jax.Array, acs: jax.Array,
               weight: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    loss, grads = jax.value_and_grad(partial(nll_loss, policy))(state.params, obs, acs, weight)
    metrics = {"loss": loss}
    if not policy.discrete:  # the mean action's squared error, beside the NLL (which mixes in sigma)
        err = jnp.sum((apply(policy, state.params, obs) - acs) ** 2, axis=-1)
        metrics["mse"] = (err * weight).sum() / weight.sum()
    return state.apply_gradients(grads=grads), metrics


def _sample_step(policy: MLPPolicy, minibatch_size: int, state: TrainState, key: jax.Array,
                 obs: jax.Array, acs: jax.Array, size: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update on a minibatch of distinct rows drawn uniformly from the first `size` rows."""
    idx, weight = minibatch_indices(key, size, min(minibatch_size, obs.shape[0]))
    return _adam_step(policy, state, obs[idx], acs[idx], weight)


def _train_one_seed(policy: MLPPolicy, minibatch_size: int, num_steps: int, state: TrainState, key: jax.Array,
                    obs: jax.Array, acs: jax.Array, size: jax.Array) -> tuple[TrainState, Metrics]:
    def body(state: TrainState, k: jax.Array) -> tuple[TrainState, Metrics]:
        return _sample_step(policy, minibatch_size, state, k, obs, acs, size)

    return jax.lax.scan(body, state, jax.random.split(key, num_steps))


@partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(3,))
def train_fused(policy: MLPPolicy, minibatch_size: int, num_steps: int, states: TrainState, keys: jax.Array,
                obs: jax.Array, acs: jax.Array, sizes: jax.Array) -> tuple[TrainState, Metrics]:
    """`num_steps` updates for each of K seeds in one call.

    states: K-stacked; keys (K,); obs (K, capacity, obs_dim); acs (K, capacity, ...);
    sizes (K,) rows stored. Returns the new states and the metrics ("loss", and "mse" for continuous
    actions), each of shape (K, num_steps).
    """
    return _vmapped_seeds(policy, minibatch_size, num_steps, states, keys, obs, acs, sizes)


def _vmapped_seeds(policy: MLPPolicy, minibatch_size: int, num_steps: int, states: TrainState, keys: jax.Array,
                   obs: jax.Array, acs: jax.Array, sizes: jax.Array) -> tuple[TrainState, Metrics]:
    return jax.vmap(partial(_train_one_seed, policy, minibatch_size, num_steps))(states, keys, obs, acs, sizes)


def _seed_mesh(x: object) -> Mesh | None:
    """The mesh of a seed-sharded argument (bcjax.core.devices), or None."""
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, NamedSharding) and SEED_AXIS in sharding.mesh.axis_names and sharding.mesh.size > 1:
        return sharding.mesh
    return None


def _sharded_fused(policy: MLPPolicy, minibatch_size: int, num_steps: int, mesh: Mesh) -> Callable:
    """`train_fused` with each device running its own seeds as a one-device program of K/n seeds.

    shard_map rather than jit's automatic partitioning: the partitioner rewrites the program
    (a global while-loop predicate, other fusions) and the losses then differ in the last bits
    from a one-device run; a per-device vmap computes exactly what one device computes.
    """
    spec = PartitionSpec(SEED_AXIS)
    body = jax.shard_map(partial(_vmapped_seeds, policy, minibatch_size, num_steps), mesh=mesh,
                         in_specs=spec, out_specs=spec)
    return jax.jit(body, donate_argnums=(0,))


@partial(jax.jit, static_argnums=(0, 1), donate_argnums=(2,))
def _step_all_seeds(policy: MLPPolicy, minibatch_size: int, states: TrainState, step_keys: jax.Array, t: jax.Array,
                    obs: jax.Array, acs: jax.Array, sizes: jax.Array) -> tuple[TrainState, Metrics]:
    # step_keys[:, t] is taken inside the jit: slicing outside would add a second dispatch per update.
    return jax.vmap(partial(_sample_step, policy, minibatch_size))(states, step_keys[:, t], obs, acs, sizes)


@partial(jax.jit, static_argnums=(1,))
def _split_steps(keys: jax.Array, num_steps: int) -> jax.Array:
    return jax.vmap(lambda k: jax.random.split(k, num_steps))(keys)  # (K, num_steps), as the scan splits them


Trainer = Callable[[TrainState, jax.Array, jax.Array, jax.Array, jax.Array], tuple[TrainState, Metrics]]


def _per_step_loop(step: Callable, num_steps: int, states: TrainState, keys: jax.Array, obs: jax.Array,
                   acs: jax.Array, sizes: jax.Array) -> tuple[TrainState, Metrics]:
    step_keys = _split_steps(keys, num_steps)
    metrics = []
    for t in range(num_steps):
        states, m = step(states, step_keys, t, obs, acs, sizes)
        metrics.append(m)
    return states, jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *metrics)


def compile_trainer(policy: MLPPolicy, minibatch_size: int, num_steps: int, states: TrainState, keys: jax.Array,
                    obs: jax.Array, acs: jax.Array, sizes: jax.Array, per_step: bool = False) -> Trainer:
    """`train_fused` (or one jitted call per update, same random stream) compiled now for these argument shapes, as
    `trainer(states, keys, obs, acs, sizes)`.

    Compiling before the loop keeps compilation out of every iteration and makes its
    cost measurable; a call with other shapes raises instead of silently re-tracing.
    """
    mesh = _seed_mesh(obs)
    if mesh is not None and not per_step:
        return _sharded_fused(policy, minibatch_size, num_steps, mesh).lower(states, keys, obs, acs, sizes).compile()
    if not per_step:
        return train_fused.lower(policy, minibatch_size, num_steps, states, keys, obs, acs, sizes).compile()
    step_keys = jax.eval_shape(_split_steps, keys, num_steps)
    step = _step_all_seeds.lower(policy, minibatch_size, states, step_keys, 0, obs, acs, sizes).compile()
    _split_steps.lower(keys, num_steps).compile()
    return partial(_per_step_loop, step, num_steps)
