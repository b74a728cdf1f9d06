"""Fuzzing the expert and expert-data loaders with hypothesis (a fixed number of examples, see README).

Random bytes, and the real CS285 pickles with random mutations (truncation,
flipped bytes, swapped opcodes, other globals, memo repetition), go through
`load_expert` and `load_expert_data`. Each must load to valid arrays or raise
the project's one-line BcjaxError: never run code, never raise anything else,
never take memory out of proportion to the file.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bcjax.data.expert import load_expert
from bcjax.data.expert_data import load_expert_data
from bcjax.data.safe_pickle import memory_budget
from bcjax.errors import BcjaxError

EXAMPLES = 60  # per property, in the default run (5 properties: 300 pickles); stated in the README
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# A file the gadgets below would create if any code ran.
CANARY = Path(tempfile.gettempdir()) / "bcjax_fuzz_canary"
GADGETS = [
    (b"os", b"system"), (b"builtins", b"eval"), (b"builtins", b"exec"), (b"posix", b"system"),
    (b"subprocess", b"getoutput"), (b"numpy", b"load"), (b"numpy.testing", b"runstring"), (b"builtins", b"open"),
]


def _seed_files() -> list[bytes]:
    """The real CS285 files (when present) and a synthetic expert and data in the same formats."""
    from conftest import make_expert_dict

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(20, 11)).astype(np.float32)
    data = [{"observation": obs, "action": rng.normal(size=(20, 3)).astype(np.float32), "reward": np.ones(20),
             "next_observation": obs, "terminal": np.zeros(20)}]
    seeds = [pickle.dumps(make_expert_dict(11, 3, hidden=(8, 8)), protocol=2), pickle.dumps(data, protocol=5),
             pickle.dumps(data, protocol=2)]
    for kind, name in [("experts", "Hopper.pkl"), ("expert_data", "expert_data_Hopper-v4.pkl")]:
        if (SHARED / kind / name).is_file():
            seeds.append((SHARED / kind / name).read_bytes())
    return seeds


SEEDS = _seed_files()


def _load_both(data: bytes) -> None:
    """Each loader on `data`: valid arrays or BcjaxError; no code run; memory in proportion."""
    fd, name = tempfile.mkstemp(suffix=".pkl")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        for load in (load_expert, load_expert_data):
            tracemalloc.start()
            try:
                out = load(name)
            except BcjaxError as e:
                assert "\n" not in str(e)
                out = None
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            # the file's bytes in memory, plus what the budget lets them decode to, plus the checks' copies
            assert peak <= 3 * memory_budget(len(data)), (load.__name__, peak, len(data))
            if load is load_expert_data and out is not None:
                for path in out:
                    assert all(isinstance(v, np.ndarray) and np.all(np.isfinite(v)) for k, v in path.items()
                               if k != "image_obs")
            elif out is not None:
                assert np.all(np.isfinite(np.asarray(out(np.zeros((2, out.obs_dim), np.float32)))))
        assert not CANARY.exists(), "a pickle ran code"
    finally:
        os.unlink(name)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    _load_both(data)


@FUZZ
@given(st.sampled_from(SEEDS), st.data())
def test_truncated_and_bit_flipped(seed, draw):
    data = bytearray(seed)
    for _ in range(draw.draw(st.integers(1, 8))):
        i = draw.draw(st.integers(0, len(data) - 1))
        data[i] ^= 1 << draw.draw(st.integers(0, 7))
    cut = draw.draw(st.integers(1, len(data)))
    _load_both(bytes(data[:cut]))


@FUZZ
@given(st.sampled_from(SEEDS), st.data())
def test_swapped_opcodes(seed, draw):
    import pickletools

    ops = [pos for _, _, pos in pickletools.genops(seed)]
    data = bytearray(seed)
    for _ in range(draw.draw(st.integers(1, 4))):
        data[draw.draw(st.sampled_from(ops))] = draw.draw(st.integers(0, 255))
    _load_both(bytes(data))


@FUZZ
@given(st.sampled_from(SEEDS), st.sampled_from(GADGETS), st.data())
def test_other_globals(seed, gadget, draw):
    # Replace one GLOBAL / STACK_GLOBAL name pair with a code-running callable whose argument is
    # a shell command creating the canary.
    data = seed
    for module, name in [(b"numpy.core.multiarray", b"_reconstruct"), (b"numpy", b"ndarray"), (b"numpy", b"dtype"),
                         (b"_codecs", b"encode"), (b"numpy._core.numeric", b"_frombuffer")]:
        if draw.draw(st.booleans()):
            data = data.replace(b"\n".join([module, name]) + b"\n", b"\n".join(gadget) + b"\n")
            short = bytes([len(module)]) + module + b"\x94\x8c" + bytes([len(name)]) + name
            data = data.replace(short, bytes([len(gadget[0])]) + gadget[0] + b"\x94\x8c" + bytes([len(gadget[1])])
                                + gadget[1])
    payload = pickle.dumps(f"touch {CANARY}", protocol=2)[2:-1]
    direct = b"\x80\x02c" + b"\n".join(gadget) + b"\n" + payload + b"\x85R."
    _load_both(data)
    _load_both(direct)


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(2, 5000), st.data())
def test_memo_repetition(seed, n, draw):
    # The result replaced by a list of n memo references to one early entry (MARK, n BINGETs, LIST,
    # STOP), and the whole object pickled n times by reference, as `[traj] * n` pickles.
    body = seed[:-1] if seed.endswith(b".") else seed
    get = b"h" + bytes([draw.draw(st.integers(0, 3))])
    _load_both(body + b"(" + get * n + b"l.")
    _load_both(pickle.dumps([_trusted(seed)] * n))


_TRUSTED: dict[bytes, object] = {}


def _trusted(seed: bytes) -> object:
    # The seed files are this repository's and the homework's own: unpickling them plainly is safe.
    if seed not in _TRUSTED:
        _TRUSTED[seed] = pickle.loads(seed)
    return _TRUSTED[seed]


@pytest.fixture(autouse=True)
def _no_canary():
    CANARY.unlink(missing_ok=True)
    yield
    assert not CANARY.exists()
