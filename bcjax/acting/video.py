"""Rollout videos: render a policy's episodes headless and stream them to mp4 files and TensorBoard.

Rendering uses software OpenGL through `MUJOCO_GL` (bcjax.acting.gl; default `egl`,
`osmesa` also works). Where no GL can be had the run goes on without video after
one warning line. Anti-aliasing, shadows and reflections are off: on llvmpipe
they cost 5-10x the frame rate for little visible gain.

Each frame goes to its encoders (bcjax.acting.video_encode) as it is rendered: one mp4
per episode in the run directory, and a TensorBoard GIF of the episodes side by
side. Videos play in real time: a task simulated faster than MAX_FPS (Hopper: 125
steps/s) is rendered every s-th step and played at fps/s (Hopper: every 5th step,
25 fps), which also makes rendering s times cheaper.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from bcjax.acting.envs import TASK_KWARGS, video_fps
from bcjax.acting.gl import configure_gl, gl_problem
from bcjax.acting.rollout import Actor
from bcjax.acting.video_encode import GifPreview, Mp4Writer

VIDEO_SIZE = 256  # pixels per side; 480 (MuJoCo's default) renders ~2x slower on software GL
MAX_NVIDEO = 2  # episodes per video, as in CS285
MAX_FPS = 30  # rendered frames per second of simulated time
FrameSink = Callable[[int, np.ndarray], None]  # (episode index, (H, W, 3) uint8 frame)


def _is_mujoco(env_name: str) -> bool:
    try:
        return "mujoco" in str(gym.spec(env_name).entry_point)
    except gym.error.Error:
        return False


def make_render_env(env_name: str, size: int = VIDEO_SIZE) -> gym.Env:
    """An rgb_array env for video; MuJoCo tasks render at `size`² without anti-aliasing.

    Raises RuntimeError (one line, why) where no GL context can be made for a MuJoCo task.
    """
    backend = configure_gl()
    problem = gl_problem(backend) if _is_mujoco(env_name) else None
    if problem:  # probed first: a viewer that fails half-way also fails in its destructor, at exit
        raise RuntimeError(problem)
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
    ret: float
    length: int  # env steps
    frames: int  # frames rendered: ceil(length / stride)


def render_episodes(env: gym.Env, actor: Actor, n: int, ep_len: int, seed: int, on_frame: FrameSink,
                    stride: int = 1) -> list[Episode]:
    """`n` full episodes (to termination, truncation or `ep_len` steps), a frame every `stride` steps,
    each frame handed to `on_frame(episode, frame)` as soon as it is rendered (none is kept here).

    The first reset uses `seed`; a frame shows the state the action at that step sees.
    """
    env.reset(seed=seed)
    env.render()
    _fast_scene(env)
    episodes = []
    for i in range(n):
        ob, _ = env.reset()
        ret, t, n_frames = 0.0, 0, 0
        while t < ep_len:
            if t % stride == 0:
                on_frame(i, env.render())
                n_frames += 1
            ob, rew, terminated, truncated, _ = env.step(actor(np.asarray(ob, np.float32)[None])[0])
            ret, t = ret + float(rew), t + 1
            if terminated or truncated:
                break
        episodes.append(Episode(ret, t, n_frames))
    return episodes


def frame_stride(fps: float, max_fps: float = MAX_FPS) -> int:
    """Render every s-th step: the smallest s with fps / s <= max_fps."""
    return max(1, math.ceil(fps / max_fps - 1e-9))


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
        mp4: list[Mp4Writer] = []
        try:
            env = make_render_env(self.env_name, self.size)
            stride = frame_stride(video_fps(env))
            fps = video_fps(env) / stride
            gif = GifPreview(fps) if self.writer is not None else None

            def on_frame(i: int, frame: np.ndarray) -> None:
                if i == len(mp4):  # the episode's first frame: its own file
                    mp4.append(Mp4Writer(self.run_dir / "videos" / f"itr{itr:03d}_{kind}_{i}.mp4", fps))
                    if gif is not None:
                        gif.start_episode()
                mp4[i].add(frame)
                if gif is not None:
                    gif.add(frame)

            render_episodes(env, actor, self.n, self.ep_len, seed, on_frame, stride)
            files = [w.close() for w in mp4]
            mp4.clear()
            if gif is not None:
                gif.write(self.writer, f"{kind}_rollouts", itr)
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
            for w in mp4:  # a failure mid-episode: close what was opened (the file stays, shorter)
                with contextlib.suppress(Exception):
                    w.close()
            if env is not None:
                _close_quietly(env)


def _close_quietly(env: gym.Env) -> None:
    try:
        env.close()
    except Exception as e:  # noqa: BLE001 - a broken GL context must not mask the run's result
        print(f"warning: closing the render env failed ({type(e).__name__})", file=sys.stderr)
