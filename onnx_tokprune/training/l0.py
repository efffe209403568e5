"""The hard-concrete (L0) gate of Louizos et al. 2018, as ToP uses it for rank bins and layers.

A gate holds one log-alpha per unit. In training it samples a stretched, clamped concrete variable
z in [0, 1] (exactly 0 or 1 with positive probability, differentiable in between); the probability
that z != 0 is differentiable in log-alpha and is what a FLOPs constraint is computed from. At eval
time the gate binarises deterministically: it closes round(expected number of zeros) units, those
with the smallest log-alpha (ToP's / CoFi's rule).
"""

from __future__ import annotations

import math

import torch
from torch import nn

LIMIT_LOW, LIMIT_HIGH = -0.1, 1.1
EPS = 1e-6


class HardConcreteGate(nn.Module):
    """`shape` independent hard-concrete gates; the last dimension is one gate group (e.g. the bins
    of one layer) for the deterministic binarisation."""

    def __init__(
        self,
        shape: tuple[int, ...],
        init_mean: float,
        temperature: float = 2.0 / 3.0,
        log_alpha_range: tuple[float, float] = (math.log(1e-2), math.log(1e2)),
    ) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full(shape, float(init_mean)) + 1e-2 * torch.randn(shape))
        self.temperature = temperature
        self.log_alpha_range = log_alpha_range
        self.constrain()

    def open_probability(self) -> torch.Tensor:
        """P(z != 0) per gate: 1 - CDF of the stretched concrete at 0 (differentiable)."""
        x = (0 - LIMIT_LOW) / (LIMIT_HIGH - LIMIT_LOW)
        logits = math.log(x) - math.log(1 - x)
        cdf = torch.sigmoid(logits * self.temperature - self.log_alpha).clamp(EPS, 1 - EPS)
        return 1 - cdf

    def sample(self) -> torch.Tensor:
        """A training-time sample z in [0, 1] with the reparameterisation gradient."""
        u = torch.empty_like(self.log_alpha).uniform_(EPS, 1 - EPS)
        y = torch.sigmoid((torch.log(u) - torch.log(1 - u) + self.log_alpha) / self.temperature)
        return (y * (LIMIT_HIGH - LIMIT_LOW) + LIMIT_LOW).clamp(0.0, 1.0)

    @torch.no_grad()
    def binarize(self) -> torch.Tensor:
        """Deterministic 0/1 gates: per group, close round(expected zeros) gates with the lowest
        log-alpha."""
        groups = self.log_alpha.detach().reshape(-1, self.log_alpha.shape[-1])
        zeros = torch.round(groups.shape[-1] - self.open_probability().detach().reshape(groups.shape).sum(-1)).long()
        out = torch.ones_like(groups)
        for row, count in enumerate(zeros.tolist()):
            if count > 0:
                out[row, torch.topk(groups[row], count, largest=False).indices] = 0.0
        return out.reshape(self.log_alpha.shape)

    def forward(self) -> torch.Tensor:
        """A sample in training mode, the binarised gates in eval mode."""
        return self.sample() if self.training else self.binarize()

    @torch.no_grad()
    def constrain(self) -> None:
        """Clamp log-alpha into its range (ToP clamps to [log 1e-2, log 1e2] after every step)."""
        self.log_alpha.clamp_(*self.log_alpha_range)
