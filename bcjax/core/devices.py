"""The K seeds of a run spread over this process's devices: seed k's arrays live on one device.

Every array of the fused trainer (TrainState leaves, keys, buffers, sizes) has the
seeds on axis 0, and the seeds never interact, so splitting that axis over a 1-D
mesh (axis "seed") runs each device's seeds in parallel with no communication
beyond the while-loop predicate of the minibatch draw.

K must split evenly: the mesh takes the largest number of local devices that
divides K (K=6 on 4 devices: 3 devices, 2 seeds each; K=5 on 4: one device,
i.e. no sharding). With one device (the usual CPU run) nothing changes.
"""

from __future__ import annotations

from typing import TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

T = TypeVar("T")
SEED_AXIS = "seed"


def seed_device_count(k: int, n_devices: int) -> int:
    """The most devices, at most `n_devices`, that split `k` seeds evenly."""
    return max(d for d in range(1, min(k, n_devices) + 1) if k % d == 0)


def seed_sharding(k: int, devices: list[jax.Device] | None = None) -> NamedSharding | None:
    """Axis 0 (the K seeds) split over the local devices; None when that is one device."""
    devices = jax.local_devices() if devices is None else devices
    n = seed_device_count(k, len(devices))
    if n == 1:
        return None
    return NamedSharding(Mesh(np.array(devices[:n]), (SEED_AXIS,)), PartitionSpec(SEED_AXIS))


def shard_seeds(tree: T, sharding: NamedSharding | None) -> T:
    """`tree` with every array leaf put on `sharding` (its axis 0 must be the seeds); unchanged for None.

    A leaf already placed so is not copied; numpy leaves go straight from the host to their devices.
    """
    if sharding is None:
        return tree
    k = sharding.mesh.devices.size

    def put(x: object) -> object:
        if not isinstance(x, (jax.Array, np.ndarray)):
            return x
        if x.ndim == 0 or x.shape[0] % k:
            raise ValueError(f"shard_seeds: a leaf of shape {x.shape} has no seed axis divisible by {k}")
        return jax.device_put(x, sharding)

    return jax.tree.map(put, tree)
