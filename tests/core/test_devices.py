"""How K seeds are spread over local devices (the sharded run itself: tests/run/test_sharded_seeds.py)."""

from __future__ import annotations

import jax
import numpy as np

from bcjax.core.devices import seed_device_count, seed_sharding, shard_seeds


def test_device_count_divides_seeds():
    assert [seed_device_count(k, 4) for k in (1, 2, 3, 4, 5, 6, 8, 12)] == [1, 2, 3, 4, 1, 3, 4, 4]
    assert seed_device_count(3, 1) == 1


def test_one_device_changes_nothing():
    assert seed_sharding(4, jax.local_devices()[:1]) is None
    tree = {"a": np.zeros((4, 2))}
    assert shard_seeds(tree, None) is tree
