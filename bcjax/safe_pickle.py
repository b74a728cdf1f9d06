"""Restricted unpickling: CS285 pickles are untrusted input.

Only numpy arrays, dtypes and plain containers may come out of them; any other
global a pickle asks for is refused before it is imported.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bcjax.errors import BcjaxError

# The globals numpy needs to rebuild arrays (old and new module names), and
# nothing else. numpy.core.* is mapped to numpy._core.* to avoid its deprecation.
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _Refused(pickle.UnpicklingError):
    """A global outside the allow-list (as opposed to a corrupt stream)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) not in _ALLOWED:
            raise _Refused(
                f"it asks for the global {module}.{name}, and only numpy arrays and plain containers are allowed"
            )
        return super().find_class(module, name)


def load_pickle(path: str | Path, what: str, flag: str) -> Any:
    """Unpickle `path` allowing only numpy arrays and plain containers.

    `what` names the file for messages ("expert policy"), `flag` the option that gave it.
    """
    path = Path(path)
    if not path.is_file():
        raise BcjaxError(f"{what} file not found: {path} (check {flag})")
    try:
        with path.open("rb") as f:
            return _RestrictedUnpickler(f).load()
    except _Refused as e:
        raise BcjaxError(f"{what} file {path} was refused: {e} (give a CS285 pickle with {flag})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, ImportError, OverflowError) as e:
        raise BcjaxError(f"{what} file {path} is not a readable pickle ({type(e).__name__}: {e}); check {flag}") from None


def as_array(x: Any, where: str, ndim: int | None = None) -> np.ndarray:
    """Check that a value from a pickle is a numeric numpy array (of `ndim` dims)."""
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
        raise BcjaxError(f"{where} should be a numeric numpy array, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise BcjaxError(f"{where} should have {ndim} dimensions, got shape {x.shape}")
    return x
