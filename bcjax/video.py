"""Rollout videos: headless MuJoCo rendering to mp4 files and TensorBoard.

Rendering uses software OpenGL through `MUJOCO_GL` (default `egl`; `osmesa`
also works). Where no GL can be had the run goes on without video after one
warning line. Anti-aliasing, shadows and reflections are off: on llvmpipe they
cost 5-10x the frame rate for little visible gain.

TensorBoard gets an animated GIF summary (what tensorboardX's `add_video`
writes, encoded here with Pillow so it needs no moviepy), the episodes side by
side; the run directory gets one mp4 per episode. Videos play in real time: a
task simulated faster than MAX_FPS (Hopper: 125 steps/s) is rendered every
s-th step and played at fps/s (Hopper: every 5th step, 25 fps), which also
makes rendering s times cheaper.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from bcjax.envs import TASK_KWARGS, video_fps
from bcjax.errors import BcjaxError
from bcjax.rollout import Actor

VIDEO_SIZE = 256  # pixels per side; 480 (MuJoCo's default) renders ~2x slower on software GL
MAX_NVIDEO = 2  # episodes per video, as in CS285
MAX_FPS = 30  # rendered frames per second of simulated time
GIF_MAX_FPS = 10  # the TensorBoard preview: Pillow's GIF palette step costs ~0.1 s a frame at 512x256


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
    if library and not os.environ.get(f"PYOPENGL_{value.upper()}_LIB_PATH") and not _find_library(library):
        raise BcjaxError(f"MUJOCO_GL={value} but lib{library} is not installed: install it (scripts/setup_gl.sh), "
                         "use another MUJOCO_GL (egl, osmesa), or unset it")


def _find_library(name: str) -> str | None:
    import ctypes.util

    return ctypes.util.find_library(name)


def configure_gl() -> str:
    """Pick the headless GL backend before any render context exists; returns its name."""
    return os.environ.setdefault("MUJOCO_GL", "egl")


@functools.cache
def gl_problem(backend: str) -> str | None:
    """Why a MuJoCo GL context cannot be made with `backend`, or None when it can.

    Probed here, before gymnasium builds a viewer: a viewer that fails half-way
    also fails in its destructor, printing a traceback at exit.
    """
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


def _is_mujoco(env_name: str) -> bool:
    try:
        return "mujoco" in str(gym.spec(env_name).entry_point)
    except gym.error.Error:
        return False


def make_render_env(env_name: str, size: int = VIDEO_SIZE) -> gym.Env:
    """An rgb_array env for video; MuJoCo tasks render at `size`² without anti-aliasing."""
    configure_gl()
    kwargs: dict = {**TASK_KWARGS.get(env_name, {}), "render_mode": "rgb_array"}
    if _is_mujoco(env_name):
        # The model's "track" camera follows the body; gymnasium's default free camera stays put
        # (its trackbodyid is ignored), so a hopper walks out of the picture. No such camera: free view.
        kwargs.update(width=size, height=size, camera_name="track")
    env = gym.make(env_name, **kwargs)
    model = getattr(env.unwrapped, "model", None)
    if model is not None:
        model.vis.quality.offsamples = 0  # read when the render context is made, i.e. on the first render
    return env


def _fast_scene(env: gym.Env) -> None:
    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    if renderer is None:
        return
    import mujoco

    viewer = renderer._get_viewer("rgb_array")  # made on the first render; flags stay set
    viewer.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    viewer.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


@dataclass
class Episode:
    frames: np.ndarray  # (ceil(length / stride), H, W, 3) uint8
    ret: float
    length: int


def render_episodes(env: gym.Env, actor: Actor, n: int, ep_len: int, seed: int, stride: int = 1) -> list[Episode]:
    """`n` full episodes (to termination, truncation or `ep_len` steps), a frame every `stride` steps.

    The first reset uses `seed`; a frame shows the state the action at that step sees.
    """
    env.reset(seed=seed)
    env.render()
    _fast_scene(env)
    episodes = []
    for _ in range(n):
        ob, _ = env.reset()
        first = env.render()
        # Preallocated: a 1000-step episode is ~200 MB of frames; a list plus a copy would double it.
        frames = np.empty((math.ceil(ep_len / stride), *first.shape), np.uint8)
        ret, t, n_frames = 0.0, 0, 0
        while t < ep_len:
            if t % stride == 0:
                frames[n_frames] = first if t == 0 else env.render()
                n_frames += 1
            ob, rew, terminated, truncated, _ = env.step(actor(np.asarray(ob, np.float32)[None])[0])
            ret, t = ret + float(rew), t + 1
            if terminated or truncated:
                break
        episodes.append(Episode(frames[:n_frames], ret, t))
    return episodes


def frame_stride(fps: float, max_fps: float = MAX_FPS) -> int:
    """Render every s-th step: the smallest s with fps / s <= max_fps."""
    return max(1, math.ceil(fps / max_fps - 1e-9))


def gif_stride(fps: float) -> int:
    """Keep every s-th frame so the GIF frame delay is a whole number of 10 ms ticks (>= 20 ms), near real time."""
    lowest = max(1, math.ceil(fps / GIF_MAX_FPS - 1e-9))  # also keeps delays >= 20 ms, which browsers honour
    for s in range(lowest, lowest + 20):
        ticks = 100 * s / fps
        if abs(ticks - round(ticks)) <= 0.05 * ticks:
            return s
    return lowest


def tile_episodes(frames: list[np.ndarray]) -> np.ndarray:
    """Episodes side by side, (T, H, W*n, 3); shorter ones hold their last frame (as CS285 pads)."""
    t = max(len(f) for f in frames)
    padded = [np.concatenate([f, np.repeat(f[-1:], t - len(f), axis=0)]) for f in frames]
    return np.concatenate(padded, axis=2)


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """An animated GIF of (T, H, W, 3) uint8 frames shown at `fps`."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0)
    return buf.getvalue()


def tensorboard_video(writer, tag: str, episodes: list[np.ndarray], fps: float, step: int) -> None:
    """Write episodes of (T, H, W, 3) frames, side by side, as the image summary TensorBoard animates
    (tensorboardX add_video's format)."""
    from tensorboardX.proto.summary_pb2 import Summary

    # A real-time preview at half size and <= GIF_MAX_FPS; the mp4 files keep every frame.
    s = gif_stride(fps)
    frames = tile_episodes([e[::s, ::2, ::2] for e in episodes])
    gif = encode_gif(frames, fps / s)
    _, h, w, c = frames.shape
    image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif)
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


@contextlib.contextmanager
def _spawning_ffmpeg() -> Iterator[None]:
    with warnings.catch_warnings():
        # JAX warns on any fork; imageio-ffmpeg's is a fork+exec that never runs JAX code.
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
        yield


def write_mp4(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """H.264 mp4 (imageio-ffmpeg), one file per episode; sizes are multiples of 16 so no frame is resized."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _spawning_ffmpeg(), imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=16,
                            ffmpeg_log_level="error") as w:
        for f in frames:
            w.append_data(f)
    return path


def count_frames(path: str | Path) -> int:
    import imageio.v2 as imageio

    with _spawning_ffmpeg(), imageio.get_reader(path) as r:
        return r.count_frames()


class VideoLogger:
    """Renders MAX_NVIDEO episodes per call to `<run_dir>/videos/*.mp4` and TensorBoard.

    Any failure (no GL, no ffmpeg) prints one warning line and turns video off
    for the rest of the run: a video is never worth a crashed training run. The
    render env lives only during a call, so no GL context outlives it.
    """

    def __init__(self, env_name: str, run_dir: str | Path, ep_len: int, writer=None,
                 n: int = MAX_NVIDEO, size: int = VIDEO_SIZE, warn: Callable[[str], None] | None = None):
        self.env_name, self.run_dir, self.ep_len, self.writer, self.n = env_name, Path(run_dir), ep_len, writer, n
        self.size = size
        self.warn = warn or (lambda msg: print(msg, file=sys.stderr))
        self.enabled = True

    def log(self, itr: int, kind: str, actor: Actor, seed: int) -> list[Path]:
        """Render and save `n` episodes of `actor` tagged `kind` (train/eval); [] once video is off."""
        if not self.enabled:
            return []
        env = None
        try:
            problem = gl_problem(configure_gl()) if _is_mujoco(self.env_name) else None
            if problem:
                raise RuntimeError(problem)
            env = make_render_env(self.env_name, self.size)
            stride = frame_stride(video_fps(env))
            fps = video_fps(env) / stride
            frames = [e.frames for e in render_episodes(env, actor, self.n, self.ep_len, seed, stride)]
            files = [write_mp4(self.run_dir / "videos" / f"itr{itr:03d}_{kind}_{i}.mp4", f, fps)
                     for i, f in enumerate(frames)]
            if self.writer is not None:
                tensorboard_video(self.writer, f"{kind}_rollouts", frames, fps, itr)
            return files
        except Exception as e:  # noqa: BLE001 - any backend failure only costs the video
            self.enabled = False
            msg = str(e).splitlines()[0] if str(e) else ""
            hint = ""
            if _is_mujoco(self.env_name):
                hint = (f"; MUJOCO_GL={os.environ.get('MUJOCO_GL', '')}: install GL with scripts/setup_gl.sh "
                        "or try MUJOCO_GL=osmesa")
            self.warn(f"warning: video off for this run ({type(e).__name__}: {msg}){hint}")
            return []
        finally:
            if env is not None:
                _close_quietly(env)


def _close_quietly(env: gym.Env) -> None:
    try:
        env.close()
    except Exception as e:  # noqa: BLE001 - a broken GL context must not mask the run's result
        print(f"warning: closing the render env failed ({type(e).__name__})", file=sys.stderr)
