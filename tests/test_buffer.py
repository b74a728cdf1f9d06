"""The ring buffer: FIFO order across wrap-around, sampling only stored rows."""

import numpy as np
import pytest

from bcjax.core.buffer import FIELDS, RingBuffer


def _rows(start: int, n: int) -> dict:
    ids = np.arange(start, start + n, dtype=np.float32)
    return {
        "observation": np.stack([ids, -ids], 1),
        "action": ids[:, None],
        "reward": ids,
        "next_observation": np.stack([ids + 1, -ids], 1),
        "terminal": (ids % 5 == 4).astype(np.float32),
    }


def test_fifo_across_wraparound():
    buf = RingBuffer(capacity=7, obs_dim=2, act_shape=(1,))
    added = 0
    for n in (3, 2, 4, 6, 1, 7, 9):  # crosses the end several times, once with more rows than capacity
        buf.add(_rows(added, n))
        added += n
        newest = np.arange(max(0, added - 7), added, dtype=np.float32)
        got = _oldest_first(buf)
        assert len(buf) == len(newest)
        np.testing.assert_array_equal(got["reward"], newest)
        np.testing.assert_array_equal(got["observation"][:, 1], -newest)
        np.testing.assert_array_equal(got["action"][:, 0], newest)
        np.testing.assert_array_equal(got["terminal"], (newest % 5 == 4).astype(np.float32))


def _oldest_first(buf: RingBuffer) -> dict[str, np.ndarray]:
    # Rows 0..size-1 are the stored ones; once full, `pos` is the oldest.
    idx = ((buf.pos if len(buf) == buf.capacity else 0) + np.arange(len(buf))) % buf.capacity
    return {k: v[idx] for k, v in buf.arrays.items()}


def test_the_update_samples_only_stored_rows():
    import jax
    import jax.numpy as jnp

    from bcjax.core.update import minibatch_indices

    buf = RingBuffer(capacity=100, obs_dim=2, act_shape=(1,))
    buf.add(_rows(1, 10))  # 90 rows are still zeros
    draw = jax.jit(jax.vmap(lambda k: minibatch_indices(k, jnp.int32(len(buf)), 8)[0]))  # compiled once, not op by op
    idx = np.asarray(draw(jax.random.split(jax.random.PRNGKey(0), 200))).ravel()
    batch = {k: v[idx] for k, v in buf.arrays.items()}  # what train_loop hands the update: arrays + size
    assert set(np.unique(batch["reward"])) == set(np.arange(1, 11, dtype=np.float32))
    # rows stay intact: every field of a sampled row belongs to the same transition
    np.testing.assert_array_equal(batch["observation"][:, 0], batch["reward"])
    np.testing.assert_array_equal(batch["action"][:, 0], batch["reward"])


def test_empty_and_mismatched():
    buf = RingBuffer(capacity=4, obs_dim=2, act_shape=(1,))
    bad = _rows(0, 3)
    bad["reward"] = bad["reward"][:2]
    with pytest.raises(ValueError):
        buf.add(bad)


def test_state_dict_round_trip():
    buf = RingBuffer(capacity=5, obs_dim=2, act_shape=(1,))
    buf.add(_rows(0, 8))
    other = RingBuffer(capacity=5, obs_dim=2, act_shape=(1,))
    other.load_state_dict(buf.state_dict())
    for k in FIELDS:
        np.testing.assert_array_equal(_oldest_first(other)[k], _oldest_first(buf)[k])
    assert (other.size, other.pos) == (buf.size, buf.pos)
