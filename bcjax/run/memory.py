"""Refuse a run that cannot fit in memory before it starts, saying how much it would need.

Without this a huge --size allocates lazily and the process stalls in swap or in
a device transfer instead of failing.
"""

from __future__ import annotations

import os

from bcjax.acting.envs import EnvInfo
from bcjax.errors import BcjaxError
from bcjax.run.config import Config

# Copies of the parameters a run holds: the params, Adam's two moments, the gradients, and
# the host copies the rollouts use.
_PARAM_COPIES = 6


def buffer_capacity(cfg: Config, n_expert_rows: int, ep_len: int) -> int:
    """No more rows than the run can ever insert: a DAgger iteration adds < batch_size + ep_len."""
    most = n_expert_rows + (cfg.n_iter - 1) * (cfg.batch_size + ep_len - 1)
    return max(1, min(cfg.max_replay_buffer_size, most))


def param_count(obs_dim: int, act_dim: int, n_layers: int, size: int) -> int:
    """Weights and biases of the MLP policy (plus its log_std)."""
    sizes = [obs_dim] + [size] * n_layers
    hidden = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    return hidden + (sizes[-1] + 1) * act_dim + act_dim


def run_memory_bytes(cfg: Config, info: EnvInfo, n_expert_rows: int) -> int:
    """A lower bound of the memory a run needs, for all of its seeds: the parameters, and the replay
    buffer (one copy, on the device: observations and actions; with --normalize_obs its observations
    are also copied to the host for their statistics)."""
    params = param_count(info.obs_dim, info.act_dim, cfg.n_layers, cfg.size) * 4 * _PARAM_COPIES
    capacity = buffer_capacity(cfg, n_expert_rows, cfg.ep_len or info.max_episode_steps)
    row = 4 * ((2 if cfg.normalize_obs else 1) * info.obs_dim + (1 if info.discrete else info.act_dim))
    return cfg.num_seeds * (params + capacity * row)


def physical_memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_run_fits_memory(cfg: Config, info: EnvInfo, n_expert_rows: int, available: int | None = None) -> None:
    need = run_memory_bytes(cfg, info, n_expert_rows)
    have = physical_memory_bytes() if available is None else available
    if need > have:
        raise BcjaxError(f"this run needs at least {need / 2**30:.1f} GiB of memory (--size {cfg.size}, --n_layers "
                         f"{cfg.n_layers}, --num_seeds {cfg.num_seeds}, replay buffer), more than this machine's "
                         f"{have / 2**30:.1f} GiB: use a smaller --size, --n_layers, --num_seeds or --max_replay_buffer_size")
