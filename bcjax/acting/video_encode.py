"""Encoders fed one frame at a time: an mp4 file per episode, and the TensorBoard GIF preview.

Frames go to ffmpeg as they are rendered, so a run never holds an episode's
frames (a 1000-step Hopper episode at 256x256 is ~40 MB, twice per video, with
the tiling and GIF copies on top). The TensorBoard preview keeps only what it
shows: every s-th frame at half size (~1/12 of the pixels), side by side.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

GIF_MAX_FPS = 10  # the TensorBoard preview: Pillow's GIF palette step costs ~0.1 s a frame at 512x256


@contextlib.contextmanager
def _spawning_ffmpeg() -> Iterator[None]:
    with warnings.catch_warnings():
        # JAX warns on any fork; imageio-ffmpeg's is a fork+exec that never runs JAX code.
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
        yield


class Mp4Writer:
    """H.264 mp4 (imageio-ffmpeg) written frame by frame; sizes are multiples of 16 so no frame is resized."""

    def __init__(self, path: str | Path, fps: float) -> None:
        import imageio.v2 as imageio

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _spawning_ffmpeg():
            self._writer = imageio.get_writer(self.path, fps=fps, codec="libx264", quality=7, macro_block_size=16,
                                              ffmpeg_log_level="error")
        self.frames = 0

    def add(self, frame: np.ndarray) -> None:
        if self.frames == 0:  # imageio starts ffmpeg on the first frame
            with _spawning_ffmpeg():
                self._writer.append_data(frame)
        else:
            self._writer.append_data(frame)
        self.frames += 1

    def close(self) -> Path:
        self._writer.close()
        return self.path

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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

    images = (Image.fromarray(f) for f in frames)  # one at a time into Pillow
    first = next(images)
    buf = io.BytesIO()
    first.save(buf, format="GIF", save_all=True, append_images=images, duration=round(1000 / fps), loop=0)
    return buf.getvalue()


class GifPreview:
    """The TensorBoard video of a call's episodes, side by side, as tensorboardX add_video writes it
    (an animated GIF image summary, encoded with Pillow so no moviepy is needed).

    A real-time preview at half size and <= GIF_MAX_FPS: only every s-th frame is kept, halved;
    the mp4 files keep every frame.
    """

    def __init__(self, fps: float) -> None:
        self.stride = gif_stride(fps)
        self.fps = fps / self.stride
        self._episodes: list[list[np.ndarray]] = []
        self._seen = 0

    def start_episode(self) -> None:
        self._episodes.append([])
        self._seen = 0

    def add(self, frame: np.ndarray) -> None:
        if self._seen % self.stride == 0:
            self._episodes[-1].append(np.ascontiguousarray(frame[::2, ::2]))  # a copy: the frame is not kept
        self._seen += 1

    def write(self, writer: Any, tag: str, step: int) -> None:
        """Encode the episodes seen so far and add them to `writer` (a tensorboardX SummaryWriter)."""
        from tensorboardX.proto.summary_pb2 import Summary

        episodes = [np.stack(e) for e in self._episodes if e]
        self._episodes = []
        if not episodes:
            return
        frames = tile_episodes(episodes)
        del episodes
        _, h, w, c = frames.shape
        image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=encode_gif(frames, self.fps))
        writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
