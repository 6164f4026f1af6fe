"""`vae compare`: the same model and data under several likelihoods, one report.

A sweep over `likelihood` (vae_cli/sweep/): each family (x each seed) is an ordinary run,
trained with train.fit and scored with train.evaluate.evaluate_checkpoint, so the numbers
are exactly those `vae train` and `vae eval` give. Bits/dim are on the 8-bit scale for every
family that models 8-bit data (densities on [0, 1] get the log2(256) offset), so they compare
across families; Bernoulli scores binarised data, a different data set, and the report says so.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae_cli.errors import VaeError
from vae_cli.model.likelihoods import LIKELIHOODS
from vae_cli.train.module import VAEModule

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2016: unit u is active if Cov_x(E_q[z_u|x]) > 0.01


def applicable(dataset: str) -> list[str]:
    """Families that model this dataset: binary-only data gets the binary families, 8-bit
    data every family (Bernoulli on binarised draws of it)."""
    if dataset == "binarized-mnist":
        return [name for name, cls in LIKELIHOODS.items() if cls.support == "binary"]
    return list(LIKELIHOODS)


def parse_likelihoods(text: str | None, dataset: str) -> list[str]:
    if not text:
        return applicable(dataset)
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        if name not in LIKELIHOODS:
            from vae_cli.errors import unknown

            raise unknown("likelihood", name, LIKELIHOODS)
    if len(set(names)) != len(names):
        raise VaeError(f"--likelihoods lists a family twice: {text}")
    return names


def active_units(posterior_means: Tensor, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Latent dimensions whose posterior mean varies across the data: Cov_x(E_q[z|x]) > threshold.

    posterior_means is (N, latent); the variance is the unbiased one over the N examples.
    """
    if len(posterior_means) < 2:
        raise VaeError("active units need at least 2 examples")
    return int((posterior_means.double().var(dim=0, unbiased=True) > threshold).sum())


@torch.no_grad()
def posterior_means(module: VAEModule, x: Tensor, batch_size: int = 500) -> Tensor:
    vae = module.vae.eval()
    return torch.cat([vae.posterior(x[i : i + batch_size]).mean for i in range(0, len(x), batch_size)])
