"""A preallocated FIFO ring buffer of transitions, fed by Python-side rollouts.

Rows 0..size-1 are always the stored ones (the ring fills from 0 and only
overwrites once full), so the update's sampler draws uniformly from [0, size) of `arrays`.
"""

from __future__ import annotations

import numpy as np

Trajectory = dict[str, np.ndarray]

FIELDS = ("observation", "action", "reward", "next_observation", "terminal")


class RingBuffer:
    """Fixed capacity; adding past it overwrites the oldest rows."""

    def __init__(self, capacity: int, obs_dim: int, act_shape: tuple[int, ...], act_dtype: np.dtype = np.float32):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.arrays = {
            "observation": np.zeros((capacity, obs_dim), np.float32),
            "action": np.zeros((capacity, *act_shape), act_dtype),
            "reward": np.zeros((capacity,), np.float32),
            "next_observation": np.zeros((capacity, obs_dim), np.float32),
            "terminal": np.zeros((capacity,), np.float32),
        }
        self.size = 0  # rows stored
        self.pos = 0  # next row to write; also the oldest row once full

    def __len__(self) -> int:
        return self.size

    def add(self, rows: dict[str, np.ndarray]) -> None:
        """Append rows (a dict of equal-length arrays, FIELDS keys) in order."""
        n = len(rows["observation"])
        if any(len(rows[k]) != n for k in FIELDS):
            raise ValueError("all fields must have the same number of rows")
        if n > self.capacity:  # only the newest `capacity` rows can survive
            rows = {k: rows[k][n - self.capacity:] for k in FIELDS}
            n = self.capacity
        idx = (self.pos + np.arange(n)) % self.capacity
        for k in FIELDS:
            self.arrays[k][idx] = rows[k]
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def add_rollouts(self, paths: list[Trajectory]) -> None:
        self.add({k: np.concatenate([p[k] for p in paths]) for k in FIELDS})

    def state_dict(self) -> dict[str, np.ndarray]:
        """What a resume checkpoint stores; size and pos as 0-d arrays (orbax restores numpy arrays, not scalars)."""
        return {**{k: self.arrays[k] for k in FIELDS},
                "size": np.array(self.size, np.int64), "pos": np.array(self.pos, np.int64)}

    def load_state_dict(self, state: dict) -> None:
        for k in FIELDS:
            self.arrays[k][...] = state[k]
        self.size, self.pos = int(state["size"]), int(state["pos"])
