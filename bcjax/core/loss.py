"""The behavioural-cloning loss."""

from __future__ import annotations

import jax

from bcjax.core.model import MLPPolicy, Params, log_prob


def nll_loss(policy: MLPPolicy, params: Params, obs: jax.Array, act: jax.Array,
             weight: jax.Array | None = None) -> jax.Array:
    """Negative log-likelihood of the expert actions: summed over action dims, averaged over the batch
    (over the rows of nonzero `weight`, when a minibatch holds padding rows)."""
    nll = -log_prob(policy, params, obs, act)
    if weight is None:
        return nll.mean()
    return (nll * weight).sum() / weight.sum()
