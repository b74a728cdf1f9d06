"""Restricted, bounded unpickling: CS285 pickles are untrusted input; and the checks of what comes out of
them (and of Minari datasets): real finite arrays, CS285 trajectories.

Only numpy arrays, dtypes and plain containers may come out of them; any other
global a pickle asks for is refused before it is imported. Memory is bounded
too, in proportion to the file (`memory_budget`):

- a pre-scan of the opcodes (on the bytes in memory, so a declared length is
  checked against what the file holds before anything of that size exists)
  refuses lengths past the end of the file, memo indices no pickler writes, and
  streams whose objects would cost more than the budget;
- the numpy constructors a pickle may call, and the BUILD that fills an array,
  are wrapped to charge the bytes they would allocate before allocating them;
- the decoded object is measured counting every reference (a list of 5000
  references to one trajectory is 5000 trajectories once concatenated).
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import struct
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray as _multiarray
from numpy._core import numeric as _numeric

from bcjax.acting.rollout import Trajectory
from bcjax.errors import BcjaxError

# Decoded objects may take this many times the file's size, plus a constant (pickles of a
# few small arrays carry more Python objects than bytes). Real CS285 files decode to < 1x.
MEMORY_FACTOR = 8
MEMORY_SLACK = 4 << 20


def memory_budget(file_size: int) -> int:
    """The most bytes a pickle of `file_size` bytes may decode to."""
    return MEMORY_FACTOR * file_size + MEMORY_SLACK


class _Refused(pickle.UnpicklingError):
    """A global outside the allow-list, or more memory than the budget (as opposed to a corrupt stream)."""


class _Budget:
    """The bytes a pickle of `size` bytes has made, charged before they are allocated."""

    def __init__(self, size: int):
        self.size, self.limit, self.used = size, memory_budget(size), 0

    def charge(self, n: int, what: str) -> None:
        self.used += int(n)
        if self.used > self.limit:
            raise _Refused(f"it decodes to far more memory than its {self.size} bytes ({what} takes it past "
                           f"{self.limit} bytes decoded)")


def _nbytes(shape: Any, dtype: Any) -> int:
    """Bytes an array of `shape` and `dtype` needs (Python ints: no overflow)."""
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims):
        raise pickle.UnpicklingError(f"array shape {dims!r} is not a tuple of non-negative ints")
    return max(np.dtype(dtype).itemsize, 1) * math.prod(int(d) for d in dims)


class _NdarrayToken:
    """What `numpy.ndarray` unpickles to: `_reconstruct`'s marker for "a plain array".

    Calling the real class would allocate any shape a pickle asks for.
    """


def _wrapped_globals(budget: _Budget) -> dict[tuple[str, str], Any]:
    def reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
        if cls is not _NdarrayToken:
            raise pickle.UnpicklingError("_reconstruct of something other than numpy.ndarray")
        budget.charge(_nbytes(shape, dtype), f"an array of shape {shape}")
        return _multiarray._reconstruct(np.ndarray, shape, dtype)

    def frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        budget.charge(_nbytes(shape, dtype), f"an array of shape {shape}")
        return _numeric._frombuffer(buf, dtype, shape, order)

    def scalar(dtype: Any, *args: Any) -> Any:
        budget.charge(np.dtype(dtype).itemsize, "a numpy scalar")
        return _multiarray.scalar(dtype, *args)

    def encode(obj: Any, encoding: str = "latin1", *args: Any) -> bytes:
        # numpy's protocol-2 pickles store raw bytes as latin1 text; nothing else is needed.
        if not isinstance(obj, str) or str(encoding).replace("-", "").lower() != "latin1" or args:
            raise pickle.UnpicklingError("_codecs.encode is only allowed as numpy uses it (str, 'latin1')")
        budget.charge(len(obj), "an encoded string")
        return obj.encode("latin1")

    return {
        ("numpy", "ndarray"): _NdarrayToken,
        ("numpy", "dtype"): np.dtype,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "scalar"): scalar,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("_codecs", "encode"): encode,
    }


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler (whose BUILD opcode can be wrapped, unlike the C one's), giving only the
    allowed globals and charging an array's shape before ndarray.__setstate__ allocates it. Persistent
    ids stay refused, as by default."""

    def __init__(self, data: bytes, budget: _Budget):
        super().__init__(io.BytesIO(data))
        self.budget, self.allowed = budget, _wrapped_globals(budget)

    def find_class(self, module: str, name: str) -> Any:
        key = (module.replace("numpy.core", "numpy._core", 1), name)  # numpy 1's name for numpy._core
        if key not in self.allowed:
            raise _Refused(f"it asks for the global {module}.{name}, and only numpy arrays and plain containers are allowed")
        return self.allowed[key]

    def load_build(self) -> None:
        state = self.stack[-1]
        if isinstance(self.stack[-2], np.ndarray):
            if not isinstance(state, tuple) or len(state) not in (4, 5):
                raise pickle.UnpicklingError("malformed array state")
            self.budget.charge(_nbytes(state[-4], state[-3]), f"an array of shape {state[-4]}")
        super().load_build()

    dispatch = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: load_build}


# What one opcode may create beyond its argument's bytes, generously: an empty set or dict
# is the largest object one byte of pickle makes; every other push costs a reference.
_OPCODE_COST = {"EMPTY_SET": 256, "FROZENSET": 256, "EMPTY_DICT": 128, "DICT": 128, "EMPTY_LIST": 64, "LIST": 64}


def _prescan(data: bytes, budget: _Budget) -> None:
    """Walk the opcodes without building anything; raise on what would allocate out of proportion."""
    for n_ops, (op, arg, pos) in enumerate(pickletools.genops(io.BytesIO(data)), start=1):
        budget.charge(_OPCODE_COST.get(op.name, 16), "its objects")
        if isinstance(arg, (bytes, bytearray, str)):
            budget.charge(len(arg), "a string")
        # Picklers number memo entries 0, 1, 2, ...: a larger index is crafted, and refused (the C
        # unpickler would size its memo table by it).
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and arg > n_ops:
            raise pickle.UnpicklingError(f"memo index {arg} at opcode {n_ops} (no pickler writes that)")
        elif op.name == "FRAME" and arg > len(data) - pos:
            raise pickle.UnpicklingError(f"a frame of {arg} bytes at byte {pos}, past the end of the file")
        elif op.name in ("LONG1", "LONG4") and isinstance(arg, int) and arg.bit_length() > 1 << 16:
            raise pickle.UnpicklingError("an integer of more than 65536 bits")


def _measure(obj: Any, budget: _Budget) -> Any:
    """Charge `obj`'s size counting every reference; return it."""
    # Iterative (a deeply nested pickle must not overflow the stack), expanding a container at each
    # reference: that is what concatenating the data would copy. Cycles exhaust the budget.
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, np.ndarray):
            budget.charge(x.nbytes + 64, "its arrays (counting repeated references)")
        elif isinstance(x, (list, tuple, set, frozenset)):
            budget.charge(8 * len(x) + 56, "its containers (counting repeated references)")
            stack.extend(x)
        elif isinstance(x, dict):
            budget.charge(16 * len(x) + 64, "its containers (counting repeated references)")
            stack.extend(x.items())  # the (key, value) pairs are charged as 2-tuples too
        elif isinstance(x, (str, bytes, bytearray)):
            budget.charge(len(x) + 48, "its strings (counting repeated references)")
        else:
            budget.charge(32, "its objects")
    return obj


def loads_bounded(data: bytes) -> Any:
    """Unpickle `data` with the allow-list and the memory budget; pickle.UnpicklingError subclasses on refusal."""
    _prescan(data, _Budget(len(data)))  # the pre-scan's estimate, the allocations and the result: each checked
    obj = _RestrictedUnpickler(data, _Budget(len(data))).load()
    return _measure(obj, _Budget(len(data)))


# What a damaged or crafted file makes the unpickler, numpy, h5py or json raise (with their subclasses:
# UnicodeError is a ValueError, RecursionError a RuntimeError).
UNREADABLE = (pickle.UnpicklingError, struct.error, EOFError, OSError, RuntimeError, ValueError, TypeError,
              AttributeError, LookupError, ArithmeticError, MemoryError)


def describe(e: Exception) -> str:
    """An exception as one short line: its type and its message's first line."""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def load_pickle(path: str | Path, what: str, flag: str) -> Any:
    """Unpickle `path` allowing only numpy arrays and plain containers, within the memory budget.

    `what` names the file for messages ("expert policy"), `flag` the option that gave it.
    """
    path = Path(path)
    if not path.is_file():
        raise BcjaxError(f"{what} file not found: {path} (check {flag})")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BcjaxError(f"cannot read {what} file {path}: {e.strerror or e} (check {flag})") from None
    try:
        return loads_bounded(data)
    except _Refused as e:
        raise BcjaxError(f"{what} file {path} was refused: {e}; give a CS285 pickle with {flag}") from None
    except UNREADABLE as e:
        raise BcjaxError(f"{what} file {path} is not a readable pickle ({describe(e)}); check {flag}") from None


def as_array(x: Any, where: str, ndim: int | tuple[int, ...] | None = None, dtype: type | None = None) -> np.ndarray:
    """A value from an untrusted file checked to be a real-valued numeric numpy array (of `ndim` dims), in
    `dtype` if given, and finite (in that dtype)."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf":
        kind = f"a {x.dtype} array" if isinstance(x, np.ndarray) else type(x).__name__
        raise BcjaxError(f"{where} should be a real-valued numeric numpy array, got {kind}")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and x.ndim not in allowed:
        want = " or ".join(str(d) for d in allowed)
        raise BcjaxError(f"{where} should have {want} dimensions, got shape {x.shape}")
    x = x if dtype is None else x.astype(dtype)
    if not np.all(np.isfinite(x)):
        raise BcjaxError(f"{where} contains NaN or infinite values")
    return x


REQUIRED_KEYS = ("observation", "action", "reward", "next_observation", "terminal")
# Dimensions of each field: (T, obs_dim); (T, act_dim) or (T,) for discrete actions; (T,).
_NDIM = {"observation": 2, "next_observation": 2, "action": (1, 2), "reward": 1, "terminal": 1}


def validate_paths(data: object, where: str) -> list[Trajectory]:
    """Check a list of CS285 trajectory dicts and return copies with consistent lengths."""
    if not isinstance(data, list) or not data:
        raise BcjaxError(f"{where} is not CS285 expert data: expected a non-empty list of trajectory dicts")
    paths = []
    for i, traj in enumerate(data):
        if not isinstance(traj, dict):
            raise BcjaxError(f"{where}: trajectory {i} is a {type(traj).__name__}, expected a dict")
        if missing := [k for k in REQUIRED_KEYS if k not in traj]:
            raise BcjaxError(f"{where}: trajectory {i} lacks {', '.join(missing)} (CS285 expert data has {', '.join(REQUIRED_KEYS)})")
        # Shapes first: len() of a 0-d array raises, and a bad shape would fail deep inside the buffer.
        path = {k: as_array(traj[k], f"{where}: trajectory {i} '{k}'", _NDIM[k]) for k in REQUIRED_KEYS}
        path["image_obs"] = np.zeros((0,), np.uint8)  # never used for training; not copied from untrusted input
        n = len(path["observation"])
        if n == 0 or any(len(path[k]) != n for k in REQUIRED_KEYS):
            raise BcjaxError(f"{where}: trajectory {i} has arrays of different or zero lengths")
        if path["next_observation"].shape != path["observation"].shape:
            raise BcjaxError(f"{where}: trajectory {i} observations should be (T, obs_dim)")
        paths.append(path)
    dims = {p["observation"].shape[1] for p in paths}
    if len(dims) != 1:
        raise BcjaxError(f"{where}: trajectories have different observation sizes {sorted(dims)}")
    return paths


def check_trajectory_count(n_traj: int | None, available: int, where: str) -> None:
    """`--expert_data_trajectories` may ask for at most what the data holds."""
    if n_traj is not None and n_traj > available:
        raise BcjaxError(f"--expert_data_trajectories {n_traj} but {where} holds {available} trajectories: "
                         f"pass at most {available}, or collect more with scripts/collect_expert_data.py --n_traj")
