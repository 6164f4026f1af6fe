"""Pure functions of a VAE and a batch: ELBO, importance-weighted bound, bits/dim.

All quantities are per example, in nats, with x already on the likelihood's support.
The networks may run under autocast (bf16-mixed, 16-mixed); the densities never do: the
model hands out float32 distribution parameters and every log-density, KL and logsumexp
below runs with autocast off, so the numbers match a 32-true run to float32 accuracy.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_cli.model.vae import LatentModel, float32_maths


def elbo(vae: LatentModel, x: Tensor, analytic_kl: bool = True, k: int = 1) -> dict[str, Tensor]:
    """ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)), E_q by k reparameterised samples.

    The KL is analytic where the model has a closed form (1 stochastic layer) and
    analytic_kl is set; otherwise log q(z|x) - log p(z) at the same samples, which makes
    the ELBO exactly the mean of log_weights(vae, x, k) for the same noise.
    """
    lat = vae.sample_posterior(x, k, log_q=not analytic_kl)
    recon = sample_mean(vae.log_likelihood(x, lat.zs))
    with float32_maths(x):
        if analytic_kl and lat.kl is not None:
            kl = lat.kl
        else:
            assert lat.log_q is not None
            kl = sample_mean(lat.log_q - vae.log_prior(lat.zs))
    return {"elbo": recon - kl, "recon": recon, "kl": kl}


def sample_mean(values: Tensor) -> Tensor:
    """Mean over the leading k-samples axis; a view for k = 1 (no kernel, no backward node:
    the common training case, where this runs every step)."""
    return values.squeeze(0) if values.shape[0] == 1 else values.mean(0)


def log_weights(vae: LatentModel, x: Tensor, k: int) -> Tensor:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x) for k samples per example: shape (k, B).

    No analytic KL here: the importance weights need every term at the same sample.
    """
    lat = vae.sample_posterior(x, k)
    assert lat.log_q is not None
    log_px_z = vae.log_likelihood(x, lat.zs)
    with float32_maths(x):
        return log_px_z + vae.log_prior(lat.zs) - lat.log_q


def log_mean_exp(log_w: Tensor, dim: int = 0) -> Tensor:
    """log (1/k) sum_k exp(log_w_k) along dim, in float64 whatever the input precision."""
    return torch.logsumexp(log_w.double(), dim=dim) - math.log(log_w.shape[dim])


def iw_bound(vae: LatentModel, x: Tensor, k: int, chunk: int | None = None) -> Tensor:
    """log (1/k) sum_k w_k, the IWAE bound (Burda et al. 2016), evaluated in chunks over k.

    The logsumexp of the chunk logsumexps is exactly the logsumexp over all k, so memory
    is bounded by `chunk` samples at a time whatever k is. Differentiable: the IWAE
    objective is its negative mean.
    """
    chunk = min(chunk or k, k)
    parts = []
    for start in range(0, k, chunk):
        lw = log_weights(vae, x, min(chunk, k - start))
        with float32_maths(x):
            parts.append(torch.logsumexp(lw.double(), dim=0))
    with float32_maths(x):
        return (torch.logsumexp(torch.stack(parts), dim=0) - math.log(k)).float()


def bits_per_dim(nll_nats: Tensor, dims: int, offset_bits: float = 0.0) -> Tensor:
    """nats per example -> bits per dimension; offset_bits undoes a rescaling of the data
    (8 for a density on [0,1] of 8-bit data dequantised to (k+u)/256)."""
    return nll_nats / (dims * math.log(2.0)) + offset_bits
