"""The behavioural-cloning loss."""

from __future__ import annotations

import jax

from bcjax.policy import MLPPolicy, Params, log_prob


def nll_loss(policy: MLPPolicy, params: Params, obs: jax.Array, act: jax.Array) -> jax.Array:
    """Negative log-likelihood of the expert actions: summed over action dims, averaged over the batch."""
    return -log_prob(policy, params, obs, act).mean()
