"""The persistent compilation cache: filled by a first process, read by the next, off on request or on a bad dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bcjax.run.perf import cache_dir

REPO = Path(__file__).resolve().parents[2]

# A program no other test compiles, then what this process knows of the cache.
TINY = """
import sys
from bcjax.run.perf import cache_hits, enable_compile_cache
print("dir", enable_compile_cache(sys.argv[1] == "on"))
import jax, jax.numpy as jnp
print("value", float(jax.jit(lambda x: (jnp.cos(x) * 3.25).sum())(jnp.arange(7.0))))
print("hits", cache_hits())
"""


def _run(cache: Path, *args: str, code: str = TINY) -> subprocess.CompletedProcess:
    env = {**os.environ, "BCJAX_CACHE_DIR": str(cache), "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def _files(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()} if path.exists() else set()


def _line(out: str, name: str) -> str:
    return next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith(name + " "))


def test_cache_dir_from_env(monkeypatch):
    monkeypatch.setenv("BCJAX_CACHE_DIR", "/x/y")
    assert cache_dir() == Path("/x/y")
    monkeypatch.delenv("BCJAX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert cache_dir() == Path("/xdg/bcjax/jax")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "bcjax" / "jax"


def test_suite_uses_its_own_cache():
    assert not Path(os.environ["BCJAX_CACHE_DIR"]).is_relative_to(Path.home() / ".cache")


@pytest.mark.slow
def test_second_process_loads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "cache"
    first = _run(cache, "on")
    assert _line(first.stdout, "dir") == str(cache)
    written = _files(cache)
    assert written, "the first process wrote no cache entries"
    assert _line(first.stdout, "hits") == "0"
    second = _run(cache, "on")
    assert _files(cache) == written  # nothing compiled anew
    assert int(_line(second.stdout, "hits")) >= 1
    assert _line(second.stdout, "value") == _line(first.stdout, "value")


@pytest.mark.slow
def test_unwritable_dir_warns_and_runs(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # mkdir under a regular file fails, even as root
    proc = _run(blocker / "cache", "on")
    assert _line(proc.stdout, "dir") == "None"
    assert float(_line(proc.stdout, "value")) == pytest.approx(3.25 * sum(__import__("math").cos(i) for i in range(7)),
                                                              rel=1e-5)
    warnings = [line for line in proc.stderr.splitlines() if "compilation cache off" in line]
    assert len(warnings) == 1 and "BCJAX_CACHE_DIR" in warnings[0]


@pytest.mark.slow
def test_a_cache_that_cannot_be_written_is_one_warning_line(tmp_path):
    """A full disk (here a 100-byte file-size limit, no mount needed) made JAX warn twice per program it compiled."""
    limit = ("import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
             "resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))\n")
    more = "\nprint('more', [float(jax.jit(lambda x, i=i: x * i + 1)(2.0)) for i in range(4)])\n"  # 4 programs more
    proc = _run(tmp_path / "cache", "on", code=limit + TINY + more)
    assert _line(proc.stdout, "more") == "[1.0, 3.0, 5.0, 7.0]"
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"warning: the compilation cache in {tmp_path / 'cache'} "
                                                                    "failed (OSError: [Errno 27] File too large)"), proc.stderr


@pytest.mark.slow
def test_off_writes_nothing(tmp_path):
    cache = tmp_path / "cache"
    proc = _run(cache, "off")
    assert _line(proc.stdout, "dir") == "None"
    assert _files(cache) == set()


@pytest.mark.slow
def test_train_fills_the_cache_unless_told_not_to(tmp_path):
    """scripts/train.py: a whole (tiny) run fills the cache; with --no_compile_cache it writes no entry."""
    flags = ["--env_name", "Hopper-v4", "--expert_data_trajectories", "1", "--num_agent_train_steps_per_iter", "3",
             "--eval_batch_size", "20", "--ep_len", "20", "--video_log_freq", "-1", "--quiet",
             "--rollout_workers", "0", "--logdir", str(tmp_path / "runs")]
    code = "import sys; from bcjax.run.main import main; sys.exit(main(sys.argv[1:]))"
    on = _run(tmp_path / "on", *flags, code=code)
    assert "time (s):" in on.stdout and _files(tmp_path / "on")
    off = _run(tmp_path / "off", "--no_compile_cache", *flags, code=code)
    assert "time (s):" in off.stdout
    assert _files(tmp_path / "off") == set()
