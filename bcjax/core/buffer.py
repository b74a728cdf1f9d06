"""The replay buffer: a FIFO ring of rows per seed, a pytree that lives on the device.

`data` maps each field (for BC/DAgger "observation" and "action"; any fields a
learner needs, e.g. SAC's transitions) to an array of shape (K, capacity, ...):
K seeds on axis 0, as every array of the fused trainer. Rows 0..size-1 of a seed
are its stored ones (the ring fills from 0 and only overwrites once full), so the
update's sampler draws uniformly from [0, size). New rows go in by a jitted
insert of a fixed-size chunk; the buffer is never rebuilt or uploaded whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

CHUNK_ROWS = 1024  # rows per insert call: one compiled shape, whatever an iteration collects


@struct.dataclass
class Buffer:
    data: dict[str, jax.Array]  # field -> (K, capacity, ...)
    size: jax.Array  # (K,) int32: rows stored
    pos: jax.Array  # (K,) int32: next row to write; also the oldest row once full

    @property
    def capacity(self) -> int:
        return next(iter(self.data.values())).shape[1]


def empty(k: int, capacity: int, fields: dict[str, tuple[tuple[int, ...], Any]]) -> Buffer:
    """K empty buffers of `capacity` rows; `fields` maps a name to its row shape and dtype."""
    if capacity <= 0:
        raise ValueError("capacity must be positive")
    # numpy zeros put on the device: jnp.zeros would compile a program per shape
    zeros = {name: np.zeros((k, capacity, *shape), dtype) for name, (shape, dtype) in fields.items()}
    return jax.device_put(Buffer(zeros, np.zeros((k,), np.int32), np.zeros((k,), np.int32)))


def _insert_one(data: dict[str, jax.Array], size: jax.Array, pos: jax.Array, rows: dict[str, jax.Array],
                count: jax.Array) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    capacity = next(iter(data.values())).shape[0]
    i = jnp.arange(next(iter(rows.values())).shape[0])
    # A chunk is never longer than the capacity, so its row positions are distinct; padding rows
    # get an out-of-range position and are dropped.
    idx = jnp.where(i < count, (pos + i) % capacity, capacity)
    data = {k: v.at[idx].set(rows[k].astype(v.dtype), mode="drop") for k, v in data.items()}
    return data, jnp.minimum(size + count, capacity), (pos + count) % capacity


def insert(buffer: Buffer, rows: dict[str, jax.Array], count: jax.Array) -> Buffer:
    """`buffer` with the first count[k] rows of rows[field][k] appended to seed k (pure; jit it)."""
    data, size, pos = jax.vmap(_insert_one)(buffer.data, buffer.size, buffer.pos, rows, count)
    return Buffer(data, size, pos)


Inserter = Callable[[Buffer, dict[str, np.ndarray], np.ndarray], Buffer]


def chunk_rows(buffer: Buffer) -> int:
    return min(buffer.capacity, CHUNK_ROWS)


def compile_insert(buffer: Buffer, sharding: jax.sharding.Sharding | None = None) -> Inserter:
    """`insert` compiled now for chunks of `chunk_rows(buffer)` rows, updating the buffer in place (donated);
    with a seed sharding every argument and the result keep their seeds on their own devices."""
    chunk = chunk_rows(buffer)
    rows = {k: jax.ShapeDtypeStruct((v.shape[0], chunk, *v.shape[2:]), v.dtype) for k, v in buffer.data.items()}
    count = jax.ShapeDtypeStruct(buffer.size.shape, jnp.int32)
    placed = {} if sharding is None else {"in_shardings": sharding, "out_shardings": sharding}
    return jax.jit(insert, donate_argnums=(0,), **placed).lower(buffer, rows, count).compile()


def add(insert_fn: Inserter, buffer: Buffer, rows_per_seed: list[dict[str, np.ndarray]],
        place: Callable[[Any], Any] = lambda x: x) -> Buffer:
    """Append each seed's host rows (field -> (n_k, ...); n_k may differ) through `insert_fn`, a padded
    (K, chunk, ...) block at a time; `place` puts each block where the buffer lives (seed sharding).

    More rows than the capacity: only the newest `capacity` survive, written from `pos` on (the
    positions a host ring buffer gives them), so the samplers draw the same rows.
    """
    cap, chunk = buffer.capacity, chunk_rows(buffer)
    rows_per_seed = [{name: v[-cap:] for name, v in rows.items()} for rows in rows_per_seed]
    n = np.array([len(next(iter(rows.values()))) for rows in rows_per_seed])
    for start in range(0, int(n.max(initial=0)), chunk):
        block = {name: np.zeros((len(n), chunk, *like.shape[2:]), like.dtype) for name, like in buffer.data.items()}
        for k, rows in enumerate(rows_per_seed):
            for name, out in block.items():
                part = rows[name][start:start + chunk]
                out[k, :len(part)] = part
        buffer = insert_fn(buffer, *place((block, np.clip(n - start, 0, chunk).astype(np.int32))))
    return buffer


def host_rows(buffer: Buffer, name: str) -> list[np.ndarray]:
    """Field `name`'s stored rows of each seed, copied to the host (rows 0..size-1, in ring order)."""
    values, sizes = jax.device_get((buffer.data[name], buffer.size))
    return [np.asarray(v[:n]) for v, n in zip(values, sizes)]
