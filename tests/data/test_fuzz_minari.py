"""Fuzzing the Minari reader with hypothesis (a fixed number of examples, as in test_fuzz_pickles.py).

Random HDF5 layouts (fields present or missing, declared sizes up to 2^40 steps written or not,
dtypes, chunking and gzip, hard, soft and external links, episode counts that disagree with
metadata.json), and Minari-written HDF5 files with flipped bits or cut short, go through
`load_expert_data`. Each must load to valid trajectories or raise the project's one-line BcjaxError,
never anything else, with memory in proportion to the files: tracemalloc's peak (numpy's arrays)
and the process's peak RSS (HDF5's own buffers too).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import tracemalloc
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bcjax.data.expert_data import load_expert_data
from bcjax.data.safe_pickle import memory_budget
from bcjax.errors import BcjaxError

minari = pytest.importorskip("minari")
h5py = pytest.importorskip("h5py")

EXAMPLES = 60  # per property, in the default run (2 properties: 120 datasets)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Minari's fields: (steps beyond the episode's T, shape of one step, dtype Minari writes)
FIELDS = {"observations": (1, (11,), "f4"), "actions": (0, (3,), "f4"), "rewards": (0, (), "f8"),
          "terminations": (0, (), "?"), "truncations": (0, (), "?")}
KINDS = st.sampled_from(["valid"] * 6 + ["missing", "declared", "dtype", "scalar", "hard link", "soft link", "external link",
                                         "huge chunk", "non-finite"])
STEPS = st.sampled_from([0, 1, 7, 1 << 16, 1 << 27, 1 << 40])
DTYPES = st.sampled_from(["f2", "f4", "f8", "i1", "i8", "u8", "?", "c8", "S3"])
MIB = 1 << 20


def _peak_rss() -> int:
    return int(re.search(r"VmHWM:\s*(\d+) kB", Path("/proc/self/status").read_text())[1]) << 10


def _metadata(total: int) -> str:
    from minari.serialization import serialize_space

    return json.dumps({"total_episodes": total, "total_steps": 0, "data_format": "hdf5", "dataset_id": "fuzz/data-v0",
                       "minari_version": minari.__version__,
                       "observation_space": serialize_space(gym.spaces.Box(-np.inf, np.inf, (11,), np.float32)),
                       "action_space": serialize_space(gym.spaces.Box(-1, 1, (3,), np.float32))})


def _files_size(data_dir: Path) -> int:
    return sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())


def _check_load(data_dir: Path) -> None:
    """`data_dir` loads to valid trajectories or one BcjaxError line, in memory proportional to its files."""
    budget = memory_budget(_files_size(data_dir))
    rss = _peak_rss()
    tracemalloc.start()
    try:
        paths = load_expert_data(data_dir)
    except BcjaxError as e:
        assert "\n" not in str(e) and str(e).startswith(f"Minari dataset {data_dir}"), str(e)
        paths = []
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= 3 * budget, (peak, budget)  # the arrays read, the trajectories and validation's copies
    assert _peak_rss() - rss <= 3 * budget + 64 * MIB, (_peak_rss() - rss, budget)
    for path in paths:
        n = len(path["reward"])
        assert n > 0 and all(len(path[k]) == n and np.all(np.isfinite(path[k])) for k in
                             ("observation", "action", "reward", "next_observation", "terminal"))


def _field(f, group, key: str, steps: int, kind: str, draw) -> None:
    """Episode `group`'s field `key` as `kind` says; a layout h5py refuses to write leaves it missing."""
    extra, tail, dtype = FIELDS[key]
    if kind == "missing" or (kind == "hard link" and f"episode_0/{key}" not in f):
        return
    if kind in ("hard link", "soft link", "external link"):
        other = Path(f.filename).with_name("other.hdf5")
        with h5py.File(other, "a") as g:
            g.require_dataset("x", (steps + extra, *tail), dtype)
        group[key] = {"hard link": lambda: f[f"episode_0/{key}"], "soft link": lambda: h5py.SoftLink(f"/episode_0/{key}"),
                      "external link": lambda: h5py.ExternalLink(str(other), "/x")}[kind]()
        return
    rows = draw(STEPS) if kind == "declared" else steps + extra
    dtype = draw(DTYPES) if kind == "dtype" else dtype
    shape = () if kind == "scalar" else (rows, *tail)
    chunked = rows > 1 << 10 or kind == "huge chunk" or draw(st.booleans())
    chunks = (draw(st.sampled_from([1 << 12, 1 << 20, 1 << 26])), *tail) if kind == "huge chunk" else chunked or None
    ds = group.create_dataset(key, shape, dtype, chunks=chunks if shape else None, maxshape=(None, *tail) if shape else None,
                              compression="gzip" if chunked and shape and draw(st.booleans()) else None)
    if math.prod(shape) <= 1 << 12:  # small ones are written; the others stay declared only (they read as zeros)
        values = np.random.default_rng(draw(st.integers(0, 9))).normal(size=shape) * 3
        if kind == "non-finite" and values.size:
            values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
        ds[()] = values.astype(ds.dtype) if ds.dtype.kind != "S" else values.astype("S3")


@FUZZ
@given(st.data())
def test_random_hdf5_layouts(data):
    draw = data.draw
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        with h5py.File(data_dir / "main_data.hdf5", "w") as f:
            n_episodes = draw(st.integers(0, 3))
            for i in range(n_episodes):
                group = f.create_group(f"episode_{i}")
                steps = draw(st.integers(0, 6))
                for key in FIELDS:
                    try:
                        _field(f, group, key, steps, draw(KINDS), draw)
                    except (ValueError, TypeError, OSError, RuntimeError):  # e.g. a hard link to a soft-link loop
                        pass
        total = draw(st.sampled_from([n_episodes, n_episodes, 0, n_episodes + 1, 1 << 40]))
        (data_dir / "metadata.json").write_text(_metadata(total))
        _check_load(data_dir)


@pytest.fixture(scope="module")
def written():
    """A dataset written by Minari itself: its data folder."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    root = Path(tempfile.mkdtemp())
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    rng = np.random.default_rng(0)
    try:
        episodes = [minari.data_collector.EpisodeBuffer(
            observations=rng.normal(size=(t + 1, 11)).astype(np.float32), actions=rng.normal(size=(t, 3)).astype(np.float32),
            rewards=np.ones(t), terminations=np.eye(1, t, t - 1, dtype=bool)[0], truncations=np.zeros(t, bool))
            for t in (20, 30)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            minari.create_dataset_from_buffers(
                "fuzz/hdf5-v0", episodes, observation_space=gym.spaces.Box(-np.inf, np.inf, (11,), np.float32),
                action_space=gym.spaces.Box(-1, 1, (3,), np.float32))
        yield root / "fuzz" / "hdf5-v0" / "data"
    finally:
        os.environ.pop("MINARI_DATASETS_PATH") if old is None else os.environ.update(MINARI_DATASETS_PATH=old)
        shutil.rmtree(root, ignore_errors=True)


def _damage(file: Path, draw) -> None:
    data = bytearray(file.read_bytes())
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    file.write_bytes(bytes(data[: draw(st.integers(1, len(data)))]))


@FUZZ
@given(st.data())
def test_bit_flipped_and_truncated_hdf5(written, data):
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(shutil.copytree(written, Path(tmp) / "data"))
        _damage(data_dir / "main_data.hdf5", data.draw)
        _check_load(data_dir)
