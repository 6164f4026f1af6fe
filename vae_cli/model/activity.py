"""Active units (Burda et al. 2016, section 5.2): latent dimension u is active when
A_u = Cov_x(E_{q(z|x)}[z_u]) > 0.01, the variance over the data of its posterior mean.

The one definition in vae-cli (`vae eval`, `vae compare`): the variance over the evaluated
split, taken as the whole population (divide by N, as numpy's np.var), from float64 sums
of mu and mu^2 that are added across ranks, so it is exact on any sharding."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

THRESHOLD = 0.01


class VectorSum(Metric):
    """Per-dimension sum of (N, D) rows, float64, summed across ranks: exact on any sharding."""

    full_state_update = False

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.add_state("total", default=torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, rows: Tensor) -> None:
        self.total += rows.detach().double().sum(0)

    def compute(self) -> Tensor:
        return self.total


def unit_variances(total: Tensor, total_sq: Tensor, n: Tensor | float) -> Tensor:
    """Variance over examples of each dimension's posterior mean, from sums of mu and mu^2."""
    mean = total / n
    return (total_sq / n - mean**2).clamp_min(0)


def count_active(variances: Tensor, threshold: float = THRESHOLD) -> int:
    return int((variances > threshold).sum().item())
