"""Videos: mp4 per episode with the right frame count, a TensorBoard GIF, and no crash without GL."""

from __future__ import annotations

import glob
import io
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from tiny_runs import expert_data, hopper_cfg, hopper_expert, metrics_without_time, run_logged

from bcjax.acting.video import GIF_MAX_FPS, VideoLogger, frame_stride, gif_stride, make_render_env, render_episodes, tile_episodes
from bcjax.run.logger import read_metrics


def test_strides_play_in_real_time():
    assert frame_stride(125.0) == 5  # Hopper, Walker2d: every 5th step at 25 fps
    assert frame_stride(20.0) == 1  # HalfCheetah, Ant
    assert frame_stride(50.0) == 2
    assert frame_stride(30.0) == 1
    for fps in (125.0, 25.0, 20.0, 50.0, 60.0, 1 / 0.015):
        s = gif_stride(fps)
        delay_ms = 1000 * s / fps
        assert delay_ms >= 20  # browsers slow shorter GIF delays down
        assert abs(delay_ms / 10 - round(delay_ms / 10)) <= 0.05 * delay_ms / 10 or s == math.ceil(fps / GIF_MAX_FPS)
        assert fps / s <= GIF_MAX_FPS


def test_tile_episodes_holds_the_last_frame_of_shorter_ones():
    a = np.zeros((3, 2, 2, 3), np.uint8)
    b = np.stack([np.full((2, 2, 3), i + 1, np.uint8) for i in range(2)])
    tiled = tile_episodes([a, b])
    assert tiled.shape == (3, 2, 4, 3)
    assert (tiled[2, :, 2:] == 2).all()  # b's last frame repeated


@pytest.fixture(scope="module")
def gl():
    """Skip unless headless MuJoCo rendering works here (MUJOCO_GL=egl or osmesa and Mesa installed)."""
    try:
        env = make_render_env("Hopper-v4", 64)
        env.reset(seed=0)
        frame = env.render()
        env.close()
    except Exception as e:  # noqa: BLE001 - any failure means: no GL on this machine
        pytest.skip(f"no headless GL for MuJoCo ({type(e).__name__}: {e}); install it with scripts/setup_gl.sh")
    assert frame.shape == (64, 64, 3)


def mp4_frames(path: Path) -> int:
    """The frame count a player sees in the written file."""
    import imageio.v2 as imageio

    with imageio.get_reader(path) as r:
        return r.count_frames()


def _tensorboard_images(run_dir: Path) -> list[tuple[int, str, object]]:
    """(step, tag, image) of every image summary in the run's event files (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    out = []
    for path in sorted(glob.glob(str(run_dir / "events.out.tfevents.*"))):
        data = Path(path).read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            out += [(event.step, v.tag, v.image) for v in event.summary.value if v.HasField("image")]
    return out


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:os.fork")  # reading the mp4 back spawns ffmpeg
def test_video_logger_writes_mp4s_and_a_tensorboard_gif(gl, tmp_path):
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    files = VideoLogger("Hopper-v4", tmp_path, ep_len=23, writer=writer, size=64).log(3, "eval", hopper_expert, seed=0)
    writer.close()
    assert [f.name for f in files] == ["itr003_eval_0.mp4", "itr003_eval_1.mp4"]
    # zero torques keep the hopper up for 23 steps: 23 steps at 125 steps/s, every 5th rendered
    import imageio.v2 as imageio

    assert [mp4_frames(f) for f in files] == [math.ceil(23 / 5)] * 2

    with imageio.get_reader(files[0]) as r:
        assert r.get_meta_data()["fps"] == pytest.approx(25.0)
        assert r.get_data(0).shape == (64, 64, 3)
    (images,) = _tensorboard_images(tmp_path)
    step, tag, image = images
    assert (step, tag) == (3, "eval_rollouts")
    assert image.encoded_image_string[:6] == b"GIF89a"
    assert (image.width, image.height) == (64, 32)  # the two episodes side by side, at half size
    from PIL import Image

    gif = Image.open(io.BytesIO(image.encoded_image_string))
    assert gif.n_frames == math.ceil(math.ceil(23 / 5) / gif_stride(25.0))  # every s-th of the 25-fps frames


@pytest.mark.slow
def test_rendered_episode_frames_follow_the_episode(gl):
    env = make_render_env("Hopper-v4", 64)
    frames: dict[int, list[np.ndarray]] = {0: [], 1: []}
    eps = render_episodes(env, hopper_expert, 2, 1000, seed=1, stride=1,
                          on_frame=lambda i, f: frames[i].append(f.copy()))
    env.close()
    for i, ep in enumerate(eps):
        assert len(ep["reward"]) < 1000  # zero torques: the hopper falls and the episode terminates
        assert len(frames[i]) == len(ep["reward"])  # one frame per step, the state each action saw
        assert frames[i][0].shape == (64, 64, 3) and frames[i][0].dtype == np.uint8
        assert not np.array_equal(frames[i][0], frames[i][-1])


@pytest.mark.slow
def test_frames_are_streamed_not_stacked(gl, tmp_path, monkeypatch):
    """Each mp4 encoder gets single (H, W, 3) frames while the episode runs: no episode is held as a stack."""
    import bcjax.acting.video

    seen: list[tuple[int, ...]] = []
    open_mp4 = bcjax.acting.video.open_mp4

    class Recording:
        def __init__(self, *args) -> None:
            self.mp4 = open_mp4(*args)

        def send(self, frame: np.ndarray) -> None:
            seen.append(frame.shape)
            self.mp4.send(frame)

        def close(self) -> None:
            self.mp4.close()

    monkeypatch.setattr(bcjax.acting.video, "open_mp4", Recording)
    files = VideoLogger("Hopper-v4", tmp_path, ep_len=12, size=64).log(0, "eval", hopper_expert, seed=0)
    assert len(files) == 2 and seen == [(64, 64, 3)] * (2 * math.ceil(12 / 5))


@pytest.mark.slow
def test_training_writes_videos_every_video_log_freq_without_changing_metrics(gl, tmp_path):
    paths = expert_data("Hopper-v4", hopper_expert, n=1, ep_len=30)
    cfg = hopper_cfg(tmp_path, n_iter=3)
    with_video, _ = run_logged(cfg.replace(video_log_freq=2, logdir=str(tmp_path / "v")), hopper_expert, paths)
    without, _ = run_logged(cfg.replace(logdir=str(tmp_path / "n")), hopper_expert, paths)
    names = sorted(p.name for p in (with_video / "videos").iterdir())
    # iteration 0 trains on loaded expert data, so it has no collection policy to film (as in CS285)
    videos = {(0, "eval"), (2, "eval"), (2, "train")}
    assert names == sorted(f"itr{i:03d}_{k}_{j}.mp4" for i, k in videos for j in (0, 1))
    assert {(s, t) for s, t, _ in _tensorboard_images(with_video)} == {(i, f"{k}_rollouts") for i, k in videos}
    # video rollouts draw their own seeds: the training stream is untouched
    assert metrics_without_time(with_video) == metrics_without_time(without)


def test_a_failing_video_backend_does_not_stop_training(tmp_path, monkeypatch, capsys):
    """An unknown MUJOCO_GL makes gymnasium's renderer raise: one warning, no video, the run completes."""
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    paths = expert_data("Hopper-v4", hopper_expert, n=1, ep_len=30)
    run_dir, _ = run_logged(hopper_cfg(tmp_path, n_iter=3, video_log_freq=1, save_params=True), hopper_expert, paths)
    assert [r["Iteration"] for r in read_metrics(run_dir)] == [0, 1, 2]
    assert not list(run_dir.glob("videos/*.mp4"))  # what a user would look for
    assert _tensorboard_images(run_dir) == []
    warnings = [line for line in capsys.readouterr().err.splitlines() if "video off" in line]
    assert len(warnings) == 1 and "MUJOCO_GL=no-such-backend" in warnings[0]
    assert (run_dir / "checkpoints" / "2").is_dir()


def test_an_unknown_mujoco_gl_is_a_one_line_cli_error(monkeypatch, capsys):
    from bcjax.run.main import main

    monkeypatch.setenv("MUJOCO_GL", "bogus")  # `import mujoco` would raise a traceback in a fresh process
    assert main(["--algo", "bc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MUJOCO_GL='bogus'") and err.count("\n") == 1
