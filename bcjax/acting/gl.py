"""Headless OpenGL for MuJoCo rendering: which backend (MUJOCO_GL), and whether a context can be made.

`BCJAX_NO_GL=1` makes the probe report no GL, as on a machine without it (the
tests use it to check that runs without GL complete).
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings
from ctypes.util import find_library

from bcjax.errors import BcjaxError

NO_GL_ENV = "BCJAX_NO_GL"


def check_mujoco_gl_setting() -> None:
    """`import mujoco` itself raises on a MUJOCO_GL value it does not know: say so in one line first."""
    value = os.environ.get("MUJOCO_GL", "").lower().strip()
    known = ("", "disable", "disabled", "off", "false", "0", "enable", "enabled", "on", "true", "1",
             "glfw", "glx", "egl", "osmesa", "wgl", "cgl")
    if value not in known:
        raise BcjaxError(f"MUJOCO_GL={value!r} is not a value MuJoCo accepts: use egl or osmesa "
                         "(headless), glfw (with a display), or unset it")
    # `import mujoco` loads the backend's library at once and fails with a traceback without it,
    # even for runs that never render: look for the library first.
    library = {"egl": "EGL", "osmesa": "OSMesa"}.get(value)
    if library and not os.environ.get(f"PYOPENGL_{value.upper()}_LIB_PATH") and not find_library(library):
        raise BcjaxError(f"MUJOCO_GL={value} but lib{library} is not installed: install it (scripts/setup_gl.sh), "
                         "use another MUJOCO_GL (egl, osmesa), or unset it")


def configure_gl() -> str:
    """Pick the headless GL backend before any render context exists; returns its name."""
    return os.environ.setdefault("MUJOCO_GL", "egl")


def gl_problem(backend: str) -> str | None:
    """Why a MuJoCo GL context cannot be made with `backend`, or None when it can.

    Probed here, before gymnasium builds a viewer: a viewer that fails half-way
    also fails in its destructor, printing a traceback at exit.
    """
    if os.environ.get(NO_GL_ENV, "") not in ("", "0"):
        return f"{NO_GL_ENV} is set"
    return _probe(backend)


@functools.cache  # a context per backend and process is enough to know
def _probe(backend: str) -> str | None:
    if backend not in ("egl", "osmesa", "glfw"):
        return f"MUJOCO_GL={backend!r} is not one of egl, osmesa, glfw"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # glfw warns instead of raising when it has no display
            ctx = importlib.import_module(f"mujoco.{backend}").GLContext(16, 16)
        if not getattr(ctx, "_context", True):  # a NULL window pointer
            return f"MUJOCO_GL={backend}: no window could be opened (no display); use egl or osmesa"
        ctx.free()
    except Exception as e:  # noqa: BLE001 - missing libraries show up as many exception types
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no GL context'}"
    return None
