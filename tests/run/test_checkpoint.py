"""Orbax checkpoints of a run: bit-identical round trips, latest-only resume state, atomic writes."""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcjax.core import buffer as rb
from bcjax.core.model import MLPPolicy
from bcjax.core.update import create_train_states, fit
from bcjax.errors import BcjaxError
from bcjax.run.checkpoint import (
    RESUME_DIR,
    LoopState,
    checkpoint_steps,
    load_policy,
    restore_checkpoint,
    restore_resume,
    save_policy,
    save_resume,
)
from bcjax.run.config import Config, config_dict

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def _trained_states(k: int = 2):
    """K TrainStates after a few real Adam steps, so step and both moments are non-trivial (made once)."""
    policy = MLPPolicy(act_dim=3, n_layers=2, size=16)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(k)])
    states = create_train_states(policy, keys, 11, 1e-3)
    obs = jax.random.normal(jax.random.PRNGKey(7), (k, 64, 11))
    acs = jax.random.normal(jax.random.PRNGKey(8), (k, 64, 3))
    buffer = rb.Buffer({"observation": obs, "action": acs}, jnp.full((k,), 64, jnp.int32), jnp.zeros((k,), jnp.int32))
    states, _ = fit(policy, 16, 5, states, buffer, keys)
    return policy, states


def _meta(k: int) -> dict:
    cfg = Config(size=16, learning_rate=1e-3, num_seeds=k)
    return {"config": config_dict(cfg), "env_name": "Hopper-v4", "obs_dim": 11, "act_dim": 3, "discrete": False,
            "num_seeds": k, "ep_len": 1000}


def _assert_trees_identical(a, b) -> None:
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y)


def test_policy_checkpoint_restores_bit_identical_train_state(tmp_path):
    _, states = _trained_states()
    save_policy(tmp_path, 4, states, _meta(2))
    saved = load_policy(tmp_path)
    assert saved.iteration == 4
    assert int(saved.states.step[0]) == 5
    _assert_trees_identical(states.params, saved.states.params)
    _assert_trees_identical(states.opt_state, saved.states.opt_state)
    _assert_trees_identical(states.step, saved.states.step)
    assert saved.meta["env_name"] == "Hopper-v4" and saved.config.size == 16
    _assert_trees_identical(jax.tree.map(lambda x: x[1], states.params), saved.params(1))


def test_load_policy_picks_the_step(tmp_path):
    _, states = _trained_states()
    save_policy(tmp_path, 0, jax.tree.map(jnp.zeros_like, states), _meta(2))
    save_policy(tmp_path, 1, states, _meta(2))
    assert checkpoint_steps(tmp_path / "checkpoints") == [0, 1]
    older = load_policy(tmp_path, step=0)
    assert older.iteration == 0
    assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(older.states.params))
    with pytest.raises(BcjaxError, match="no checkpoint step 5"):
        load_policy(tmp_path, step=5)


def test_missing_checkpoints_are_a_clear_error(tmp_path):
    with pytest.raises(BcjaxError, match="no checkpoint"):
        load_policy(tmp_path)
    with pytest.raises(BcjaxError, match="no run directory"):
        load_policy(tmp_path / "nope")


_FIELDS = {"observation": ((11,), np.float32), "action": ((3,), np.float32)}


def _filled_buffer(rows: list[int], capacity: int = 50) -> rb.Buffer:
    rng = np.random.default_rng(sum(rows))
    buf = rb.empty(len(rows), capacity, _FIELDS)
    return rb.add(rb.compile_insert(buf), buf, [{"observation": rng.normal(size=(n, 11)),
                                                 "action": rng.normal(size=(n, 3))} for n in rows])


def test_resume_state_round_trip_and_only_the_latest_two_are_kept(tmp_path):
    _, states = _trained_states()
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    buffer = _filled_buffer([30, 70])  # the second is full: pos != size
    for itr in range(3):
        save_resume(tmp_path, LoopState(itr, states, keys, buffer, np.array([10 * itr, 11 * itr]), 1.5 + itr), _meta(2))
    assert checkpoint_steps(tmp_path / RESUME_DIR) == [1, 2]  # the older one: a fallback if the newer is corrupt

    _, fresh = _trained_states()
    fresh = jax.tree.map(jnp.zeros_like, fresh)
    template = LoopState(-1, fresh, jnp.zeros_like(keys), rb.empty(2, 50, _FIELDS), np.zeros(2, np.int64), 0.0)
    loop = restore_resume(tmp_path, template)
    assert loop.iteration == 2 and loop.elapsed == 3.5
    assert loop.envsteps.tolist() == [20, 22]
    for field in ("params", "opt_state", "step"):
        _assert_trees_identical(getattr(states, field), getattr(loop.states, field))
    assert np.array_equal(np.asarray(loop.loop_keys), np.asarray(keys))
    _assert_trees_identical(buffer, loop.buffer)
    assert loop.buffer.size.tolist() == [30, 50] and loop.buffer.pos.tolist() == [30, 0]


def test_resume_into_a_different_shape_is_a_clear_error(tmp_path):
    _, states = _trained_states()
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    save_resume(tmp_path, LoopState(0, states, keys, _filled_buffer([5, 5]), np.zeros(2), 0.0), _meta(2))
    template = LoopState(-1, states, keys, rb.empty(2, 80, _FIELDS), np.zeros(2), 0.0)
    with pytest.raises(BcjaxError, match="does not fit"):
        restore_resume(tmp_path, template)


_SAVER = """
import sys, numpy as np
from bcjax.run.checkpoint import save_checkpoint
d = sys.argv[1]
for step in range(10_000):
    save_checkpoint(d, step, {"x": np.full((16_000_000,), step, np.float32)}, {"step": step}, max_to_keep=1)
    print(step, flush=True)
"""


@pytest.mark.slow
def test_a_run_killed_while_saving_keeps_a_readable_checkpoint(tmp_path):
    """SIGKILL a process that saves 64 MB checkpoints back to back: the latest complete step restores intact."""
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path / "ckpt")], stdout=subprocess.PIPE,
                            text=True, cwd=REPO, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "0"  # one checkpoint is complete
        proc.stdout.readline()
        time.sleep(0.1)  # land inside the next save (each takes a few hundred ms)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    steps = checkpoint_steps(tmp_path / "ckpt")
    assert steps, "no readable checkpoint left"
    out, meta = restore_checkpoint(tmp_path / "ckpt", {"x": np.zeros((16_000_000,), np.float32)})
    assert meta["step"] == steps[-1]
    assert np.all(np.asarray(out["x"]) == steps[-1])


_SAVE_ON_DEVICE_1 = """
import dataclasses, sys, jax, jax.numpy as jnp
from bcjax.run.config import Config
from bcjax.core.model import MLPPolicy
from bcjax.run.checkpoint import save_policy
from bcjax.core.update import create_train_states
states = create_train_states(MLPPolicy(act_dim=3, size=16), jnp.stack([jax.random.PRNGKey(0)]), 11, 1e-3)
states = jax.device_put(states, jax.devices()[1])
meta = {"config": dataclasses.asdict(Config(size=16)), "env_name": "Hopper-v4", "obs_dim": 11, "act_dim": 3,
        "discrete": False, "num_seeds": 1, "ep_len": 1000}
save_policy(sys.argv[1], 0, states, meta)
"""


@pytest.mark.slow
def test_a_policy_saved_on_other_devices_restores_here(tmp_path):
    """Trained where the arrays lived on device 1 of 2 (a GPU box, say), evaluated on this machine's device 0."""
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO), "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", _SAVE_ON_DEVICE_1, str(tmp_path)], check=True, env=env, cwd=REPO)
    saved = load_policy(tmp_path)
    assert {d for x in jax.tree.leaves(saved.states.params) for d in x.devices()} == {jax.devices()[0]}
