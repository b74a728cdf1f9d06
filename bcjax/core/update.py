"""The learning step: `fit(state, buffer, key) -> (state, metrics)`, pure, K seeds at once.

A run holds K policies stacked on axis 0 of every array in the TrainState, and
K buffers likewise (bcjax.core.buffer); `fit` runs an iteration's updates as one
`lax.scan` with the minibatch indices drawn inside it, vmapped over the seeds.
`compile_fit` compiles it once per run (split over the local devices when the
arguments are seed-sharded, bcjax.core.devices).
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

from bcjax.core.buffer import Buffer
from bcjax.core.devices import SEED_AXIS
from bcjax.core.loss import nll_loss
from bcjax.core.model import MLPPolicy, apply, init_params, obs_stats

Metrics = dict[str, jax.Array]  # name -> values


def optimizer(learning_rate: float, weight_decay: float = 0.0, decay_steps: int | None = None) -> optax.GradientTransformation:
    """Adam, the homework's; with `weight_decay`, AdamW (Loshchilov & Hutter 2019) decaying only the kernels (not
    the biases, log_std or obs statistics); with `decay_steps`, the step size cosine-decayed to 0 over that many updates."""
    lr = optax.cosine_decay_schedule(learning_rate, decay_steps) if decay_steps else learning_rate
    if not weight_decay:
        return optax.adam(lr)
    kernels = partial(jax.tree_util.tree_map_with_path, lambda path, _: path[-1].key == "kernel")
    return optax.adamw(lr, weight_decay=weight_decay, mask=kernels)


def create_train_states(policy: MLPPolicy, keys: jax.Array, obs_dim: int, learning_rate: float,
                        weight_decay: float = 0.0, decay_steps: int | None = None) -> TrainState:
    """K TrainStates stacked on axis 0 (one per key): own init, one `optimizer` over all params."""
    tx = optimizer(learning_rate, weight_decay, decay_steps)

    def one(key: jax.Array) -> TrainState:
        return TrainState.create(apply_fn=policy.apply, params=init_params(policy, key, obs_dim), tx=tx)

    # One compiled program: run eagerly, the vmapped init compiles dozens of small ops (~1.5 s on CPU).
    return jax.jit(jax.vmap(one))(keys)


def with_obs_stats(states: TrainState, obs_per_seed: list) -> TrainState:
    """The K-stacked states with each seed's obs_mean / obs_std set from its buffer's observation rows."""
    mean, std = (jnp.asarray(np.stack(x)) for x in zip(*map(obs_stats, obs_per_seed)))
    return states.replace(params={**states.params, "params": {**states.params["params"], "obs_mean": mean, "obs_std": std}})


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


def _fit_one_seed(policy: MLPPolicy, minibatch_size: int, num_steps: int, state: TrainState, buffer: Buffer,
                  key: jax.Array) -> tuple[TrainState, Metrics]:
    obs, acs, size = buffer.data["observation"], buffer.data["action"], buffer.size
    n = min(minibatch_size, obs.shape[0])

    def body(state: TrainState, k: jax.Array) -> tuple[TrainState, Metrics]:
        # One update on a minibatch of distinct rows drawn uniformly from the first `size` rows.
        idx, weight = minibatch_indices(k, size, n)
        return _adam_step(policy, state, obs[idx], acs[idx], weight)

    return jax.lax.scan(body, state, jax.random.split(key, num_steps))


def _fit_seeds(policy: MLPPolicy, minibatch_size: int, num_steps: int, states: TrainState, buffer: Buffer,
               keys: jax.Array) -> tuple[TrainState, Metrics]:
    return jax.vmap(partial(_fit_one_seed, policy, minibatch_size, num_steps))(states, buffer, keys)


@partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(3,))
def fit(policy: MLPPolicy, minibatch_size: int, num_steps: int, states: TrainState, buffer: Buffer,
        keys: jax.Array) -> tuple[TrainState, Metrics]:
    """`num_steps` updates for each of K seeds in one call.

    states: K-stacked; buffer: K-stacked (its "observation" and "action" rows, sampled from the
    first `size`); keys (K,). Returns the new states and the metrics ("loss", and "mse" for
    continuous actions), each of shape (K, num_steps).
    """
    return _fit_seeds(policy, minibatch_size, num_steps, states, buffer, keys)


def _seed_mesh(x: object) -> Mesh | None:
    """The mesh of a seed-sharded argument (bcjax.core.devices), or None."""
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, NamedSharding) and SEED_AXIS in sharding.mesh.axis_names and sharding.mesh.size > 1:
        return sharding.mesh
    return None


Fit = Callable[[TrainState, Buffer, jax.Array], tuple[TrainState, Metrics]]


def compile_fit(policy: MLPPolicy, minibatch_size: int, num_steps: int, states: TrainState, buffer: Buffer,
                keys: jax.Array) -> Fit:
    """`fit` compiled now for these argument shapes, as `fit(states, buffer, keys)`.

    Compiling before the loop keeps compilation out of every iteration and makes its cost
    measurable; a call with other shapes raises instead of silently re-tracing. With seed-sharded
    arguments each device runs its own seeds as a one-device program of K/n seeds: shard_map
    rather than jit's automatic partitioning, which rewrites the program (a global while-loop
    predicate, other fusions) so that the losses differ in the last bits from a one-device run.
    """
    mesh = _seed_mesh(buffer.size)
    if mesh is None:
        return fit.lower(policy, minibatch_size, num_steps, states, buffer, keys).compile()
    spec = PartitionSpec(SEED_AXIS)
    body = jax.shard_map(partial(_fit_seeds, policy, minibatch_size, num_steps), mesh=mesh, in_specs=spec,
                         out_specs=spec)
    return jax.jit(body, donate_argnums=(0,)).lower(states, buffer, keys).compile()
