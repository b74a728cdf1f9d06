"""The solved CS285 hw1 PyTorch student policy, the reference bcjax is timed against.

Needs torch (`pip install -e '.[bench]'`, exactly torch==2.13.0); import it only
after checking torch is there.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import distributions, nn


def from_numpy(x: np.ndarray) -> torch.Tensor:  # cs285.infrastructure.pytorch_util
    return torch.from_numpy(x).float()


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.to("cpu").detach().numpy()


class MLPPolicySL(nn.Module):  # cs285/policies/MLP_policy.py, solved
    def __init__(self, ac_dim: int, ob_dim: int, learning_rate: float = 5e-3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size_in = ob_dim
        for _ in range(2):
            layers += [nn.Linear(size_in, 64), nn.Tanh()]
            size_in = 64
        self.mean_net = nn.Sequential(*layers, nn.Linear(size_in, ac_dim))
        self.logstd = nn.Parameter(torch.zeros(ac_dim, dtype=torch.float32))
        self.optimizer = torch.optim.Adam(itertools.chain([self.logstd], self.mean_net.parameters()), learning_rate)

    def forward(self, observation: torch.Tensor) -> distributions.Normal:
        return distributions.Normal(self.mean_net(observation), torch.exp(self.logstd))

    def get_action(self, obs: np.ndarray) -> np.ndarray:
        observation = obs if obs.ndim > 1 else obs[None]
        with torch.no_grad():
            return to_numpy(self(from_numpy(observation.astype(np.float32))).sample())

    def update(self, observations: np.ndarray, actions: np.ndarray) -> dict:
        self.optimizer.zero_grad()
        dist = self.forward(from_numpy(observations))
        loss = -dist.log_prob(from_numpy(actions)).sum(-1).mean()
        loss.backward()
        self.optimizer.step()
        return {"Training Loss": to_numpy(loss)}
