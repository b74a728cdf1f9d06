"""Rollout videos: render a policy's episodes headless and stream them to mp4 files and TensorBoard.

Rendering uses software OpenGL through `MUJOCO_GL` (bcjax.acting.gl; default `egl`,
`osmesa` also works). Where no GL can be had the run goes on without video after
one warning line. Anti-aliasing, shadows and reflections are off: on llvmpipe
they cost 5-10x the frame rate for little visible gain.

Each frame goes to its encoders as it is rendered: one mp4 per episode (ffmpeg through
imageio-ffmpeg), and a TensorBoard GIF of the episodes side by side, so a run never holds
an episode's frames (a 1000-step Hopper episode at 256x256 is ~40 MB). The preview keeps
only what it shows: every s-th frame at half size. Videos play in real time: a task
simulated faster than MAX_FPS (Hopper: 125 steps/s) is rendered every s-th step and played
at fps/s (Hopper: every 5th step, 25 fps), which also makes rendering s times cheaper.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import warnings
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from bcjax.acting.envs import TASK_KWARGS, is_mujoco
from bcjax.acting.gl import configure_gl, gl_problem
from bcjax.acting.rollout import Actor, Trajectory, sample_trajectory

VIDEO_SIZE = 256  # pixels per side; 480 (MuJoCo's default) renders ~2x slower on software GL
MAX_NVIDEO = 2  # episodes per video, as in CS285
MAX_FPS = 30  # rendered frames per second of simulated time
GIF_MAX_FPS = 10  # the TensorBoard preview: Pillow's GIF palette step costs ~0.1 s a frame at 512x256
FrameSink = Callable[[int, np.ndarray], None]  # (episode index, (H, W, 3) uint8 frame)


def make_render_env(env_name: str, size: int = VIDEO_SIZE) -> gym.Env:
    """An rgb_array env for video; MuJoCo tasks render at `size`² without anti-aliasing.

    Raises RuntimeError (one line, why) where no GL context can be made for a MuJoCo task.
    """
    backend = configure_gl()
    problem = gl_problem(backend) if is_mujoco(env_name) else None
    if problem:  # probed first: a viewer that fails half-way also fails in its destructor, at exit
        raise RuntimeError(problem)
    kwargs: dict = {**TASK_KWARGS.get(env_name, {}), "render_mode": "rgb_array"}
    if is_mujoco(env_name):
        # The model's "track" camera follows the body; gymnasium's default free camera stays put
        # (its trackbodyid is ignored), so a hopper walks out of the picture. No such camera: free view.
        kwargs.update(width=size, height=size, camera_name="track")
    env = gym.make(env_name, **kwargs)
    model = getattr(env.unwrapped, "model", None)
    if model is not None:  # the render env's own model: no anti-aliasing (read on the first render), shadows, reflections
        model.vis.quality.offsamples = 0
        model.light_castshadow[:], model.mat_reflectance[:] = 0, 0
    return env


def render_episodes(env: gym.Env, actor: Actor, n: int, ep_len: int, seed: int, on_frame: FrameSink,
                    stride: int = 1) -> list[Trajectory]:
    """`n` full episodes (bcjax.acting.rollout.sample_trajectory), a frame every `stride` steps, each frame
    handed to `on_frame(episode, frame)` as soon as it is rendered (none is kept here).

    The first reset uses `seed`; a frame shows the state the action at that step sees.
    """
    env.reset(seed=seed)
    paths = []
    for i in range(n):
        steps = itertools.count()

        def rendering(obs: np.ndarray, i: int = i, steps: Any = steps) -> np.ndarray:
            if next(steps) % stride == 0:  # called before the step: the frame the action sees
                on_frame(i, env.render())
            return actor(obs)

        paths.append(sample_trajectory(env, rendering, ep_len)[0])
    return paths


def video_fps(env: gym.Env) -> float:
    """Real-time fps: 1 / (MuJoCo timestep x frame skip), else the env's render_fps metadata."""
    if getattr(env.unwrapped, "frame_skip", None):  # a MujocoEnv: its dt is timestep x frame skip
        return float(1.0 / env.unwrapped.dt)
    return float(env.metadata.get("render_fps") or 30)


def frame_stride(fps: float, max_fps: float = MAX_FPS) -> int:
    """Render every s-th step: the smallest s with fps / s <= max_fps."""
    return max(1, math.ceil(fps / max_fps - 1e-9))


def open_mp4(path: Path, fps: float, size: tuple[int, int]) -> Generator[None, np.ndarray, None]:
    """An H.264 mp4 of (width, height) `size` (multiples of 16: no frame is resized), fed frame by frame
    with send(frame) and finished with close() (imageio-ffmpeg's writer)."""
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    mp4 = imageio_ffmpeg.write_frames(str(path), size, fps=fps, codec="libx264", quality=7, ffmpeg_log_level="error")
    with warnings.catch_warnings():
        # JAX warns on any fork; starting ffmpeg is a fork+exec that never runs JAX code.
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
        mp4.send(None)
    return mp4


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
    return np.concatenate([np.pad(f, [(0, t - len(f))] + [(0, 0)] * 3, mode="edge") for f in frames], axis=2)


def add_gif(writer: Any, tag: str, step: int, episodes: list[np.ndarray], fps: float) -> None:
    """The episodes ((T, H, W, 3) uint8 each) side by side in TensorBoard, as tensorboardX add_video writes
    them (an animated GIF image summary, here encoded by imageio: add_video needs moviepy), shown at `fps`."""
    import imageio.v3 as iio
    from tensorboardX.proto.summary_pb2 import Summary

    frames = tile_episodes(episodes)
    gif = iio.imwrite("<bytes>", frames, extension=".gif", duration=round(1000 / fps), loop=0)  # by Pillow
    _, h, w, c = frames.shape
    image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif)
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def render_videos(env_name: str, actor: Actor, n: int, ep_len: int, seed: int, mp4_path: Callable[[int], Path],
                  size: int = VIDEO_SIZE, gif: bool = False) -> tuple[list[Path], list[np.ndarray], float]:
    """`n` episodes of `actor` rendered to an mp4 each (`mp4_path(i)`) and, with `gif`, their TensorBoard
    preview and its fps: real time at half size and <= GIF_MAX_FPS, only every s-th frame kept (the mp4s
    keep every frame). The render env lives only during the call, so no GL context outlives it."""
    env = make_render_env(env_name, size)
    mp4: list[Generator] = []
    try:
        stride = frame_stride(video_fps(env))
        fps = video_fps(env) / stride
        every, preview, seen = gif_stride(fps), [], []

        def on_frame(i: int, frame: np.ndarray) -> None:
            if i == len(mp4):  # the episode's first frame: its own file
                mp4.append(open_mp4(mp4_path(i), fps, (frame.shape[1], frame.shape[0])))
                preview.append([])
                seen.append(0)
            mp4[i].send(np.ascontiguousarray(frame))  # gymnasium's frames are flipped views
            if gif and seen[i] % every == 0:
                preview[i].append(np.ascontiguousarray(frame[::2, ::2]))  # a copy: the frame is not kept
            seen[i] += 1

        render_episodes(env, actor, n, ep_len, seed, on_frame, stride)
        for w in mp4:
            w.close()
        return [mp4_path(i) for i in range(len(mp4))], [np.stack(e) for e in preview if e], fps / every
    finally:
        for w in mp4:  # closed already, or a failure mid-episode: close what was opened (the file stays, shorter)
            with contextlib.suppress(Exception):
                w.close()
        try:
            env.close()
        except Exception as e:  # noqa: BLE001 - a broken GL context must not mask the run's result
            print(f"warning: closing the render env failed ({type(e).__name__})", file=sys.stderr)


class VideoLogger:
    """Renders MAX_NVIDEO episodes per call to `<run_dir>/videos/*.mp4` and TensorBoard.

    Any failure (no GL, no ffmpeg) prints one warning line and turns video off
    for the rest of the run: a video is never worth a crashed training run.
    """

    def __init__(self, env_name: str, run_dir: str | Path, ep_len: int, writer: Any = None, size: int = VIDEO_SIZE):
        self.env_name, self.run_dir, self.ep_len, self.writer, self.size = env_name, Path(run_dir), ep_len, writer, size
        self.enabled = True

    def log(self, itr: int, kind: str, actor: Actor, seed: int) -> list[Path]:
        """Render and save `n` episodes of `actor` tagged `kind` (train/eval); [] once video is off."""
        if not self.enabled:
            return []
        try:
            files, preview, fps = render_videos(self.env_name, actor, MAX_NVIDEO, self.ep_len, seed,
                                                lambda i: self.run_dir / "videos" / f"itr{itr:03d}_{kind}_{i}.mp4",
                                                self.size, gif=self.writer is not None)
            if self.writer is not None:
                add_gif(self.writer, f"{kind}_rollouts", itr, preview, fps)
            return files
        except Exception as e:  # noqa: BLE001 - any backend failure only costs the video
            self.enabled = False
            hint = (f"; MUJOCO_GL={os.environ.get('MUJOCO_GL', '')}: install GL with scripts/setup_gl.sh or try "
                    "MUJOCO_GL=osmesa") if is_mujoco(self.env_name) else ""
            msg = (str(e).splitlines() or [""])[0]
            print(f"warning: video off for this run ({type(e).__name__}: {msg}){hint}", file=sys.stderr)
            return []
