"""The device ring buffer: FIFO order across wrap-around per seed, the rows a host ring gives, sampling only stored rows."""

import jax
import numpy as np
import pytest

from bcjax.core import buffer as rb

FIELDS = {"observation": ((2,), np.float32), "action": ((1,), np.float32)}


def _rows(start: int, n: int) -> dict:
    ids = np.arange(start, start + n, dtype=np.float32)
    return {"observation": np.stack([ids, -ids], 1), "action": ids[:, None]}


def _host_ring(capacity: int, adds: list[int]) -> tuple[np.ndarray, int, int]:
    """The ids a plain host ring buffer holds in each row (the homework's FIFO, written from its position)."""
    ring, size, pos, added = np.zeros(capacity, np.float32), 0, 0, 0
    for n in adds:
        ids = np.arange(added, added + n, dtype=np.float32)[-capacity:]
        ring[(pos + np.arange(len(ids))) % capacity] = ids
        pos, size, added = (pos + len(ids)) % capacity, min(size + len(ids), capacity), added + n
    return ring, size, pos


def _compiled(capacity: int, k: int, chunk: int | None = None, monkeypatch=None):
    if chunk is not None:
        monkeypatch.setattr(rb, "CHUNK_ROWS", chunk)
    buf = rb.empty(k, capacity, FIELDS)
    return buf, rb.compile_insert(buf)


@pytest.mark.parametrize("chunk", [None, 3])  # one chunk per add, and adds split over several chunks
def test_fifo_across_wraparound_matches_a_host_ring(monkeypatch, chunk):
    buf, insert = _compiled(7, 2, chunk, monkeypatch)
    adds = [[3, 2, 4, 6, 1, 7, 9], [1, 8, 0, 2, 5, 3, 10]]  # per seed; crosses the end, more rows than capacity
    added = [0, 0]
    for step in range(len(adds[0])):
        ns = [adds[k][step] for k in range(2)]
        buf = rb.add(insert, buf, [_rows(added[k], ns[k]) for k in range(2)])
        added = [a + n for a, n in zip(added, ns)]
        for k in range(2):
            ring, size, pos = _host_ring(7, adds[k][:step + 1])
            assert (int(buf.size[k]), int(buf.pos[k])) == (size, pos)
            got = rb.host_rows(buf, "action")[k][:, 0]
            np.testing.assert_array_equal(got, ring[:size])  # same rows in the same positions
            np.testing.assert_array_equal(rb.host_rows(buf, "observation")[k][:, 1], -ring[:size])
            newest = np.arange(max(0, added[k] - 7), added[k], dtype=np.float32)
            assert sorted(got.tolist()) == newest.tolist()  # FIFO: the newest `capacity` rows


def test_insert_compiles_once_and_casts_like_numpy():
    buf, insert = _compiled(50, 1)
    rows = {"observation": np.array([[0.1, 1e-46]], np.float64), "action": np.array([[2.5]], np.float64)}
    buf = rb.add(insert, buf, [rows])
    np.testing.assert_array_equal(rb.host_rows(buf, "observation")[0], rows["observation"].astype(np.float32))
    with pytest.raises(Exception):  # another chunk shape: the compiled insert refuses instead of re-tracing
        insert(buf, {k: np.zeros((1, 4, *v[0]), v[1]) for k, v in FIELDS.items()}, np.ones(1, np.int32))


def test_the_update_samples_only_stored_rows():
    import jax.numpy as jnp

    from bcjax.core.update import minibatch_indices

    buf, insert = _compiled(100, 1)
    buf = rb.add(insert, buf, [_rows(1, 10)])  # 90 rows are still zeros
    draw = jax.jit(jax.vmap(lambda k: minibatch_indices(k, buf.size[0], 8)[0]))  # compiled once, not op by op
    idx = np.asarray(draw(jax.random.split(jax.random.PRNGKey(0), 200))).ravel()
    batch = {k: np.asarray(v[0])[idx] for k, v in buf.data.items()}  # what fit samples: data + size
    assert set(np.unique(batch["action"][:, 0])) == set(np.arange(1, 11, dtype=np.float32))
    # rows stay intact: every field of a sampled row belongs to the same transition
    np.testing.assert_array_equal(batch["observation"][:, 0], batch["action"][:, 0])
    assert jnp.all(buf.size == 10)


def test_empty_capacity_is_refused():
    with pytest.raises(ValueError):
        rb.empty(1, 0, FIELDS)


def test_resume_state_round_trip(tmp_path):
    from bcjax.run.checkpoint import restore_checkpoint, save_checkpoint

    buf, insert = _compiled(5, 2)
    buf = rb.add(insert, buf, [_rows(0, 8), _rows(100, 3)])  # the first is full: pos != size
    save_checkpoint(tmp_path, 0, {"buffer": buf}, {})
    out, _ = restore_checkpoint(tmp_path, {"buffer": rb.empty(2, 5, FIELDS)})
    for a, b in zip(jax.tree.leaves(buf), jax.tree.leaves(out["buffer"])):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    assert isinstance(out["buffer"], rb.Buffer) and out["buffer"].pos.tolist() == [0, 3]
