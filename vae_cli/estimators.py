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
from torch.distributions import kl_divergence

from vae_cli.model import VAE


def float32_maths(x: Tensor) -> torch.autocast:
    """Autocast off on x's device: density sums over many dimensions stay in float32."""
    return torch.autocast(x.device.type, enabled=False)


def elbo(vae: VAE, x: Tensor) -> dict[str, Tensor]:
    """One reparameterised sample: ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)), KL analytic."""
    q = vae.posterior(x)
    z = q.rsample()
    p = vae.conditional(z)
    with float32_maths(x):
        recon = p.log_prob(x.float())
        kl = kl_divergence(q, vae.prior(z))
    return {"elbo": recon - kl, "recon": recon, "kl": kl}


def log_weights(vae: VAE, x: Tensor, k: int) -> Tensor:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x) for k samples per example: shape (k, B).

    No analytic KL here: the importance weights need every term at the same sample.
    """
    q = vae.posterior(x)
    z = q.rsample((k,))  # (k, B, L)
    flat = z.reshape(-1, z.shape[-1])
    xk = x.unsqueeze(0).expand(k, *x.shape).reshape(-1, *x.shape[1:])
    p = vae.conditional(flat)
    with float32_maths(x):
        log_px_z = p.log_prob(xk.float()).view(k, -1)
        return log_px_z + vae.prior(z).log_prob(z) - q.log_prob(z)


def iw_bound(vae: VAE, x: Tensor, k: int, chunk: int | None = None) -> Tensor:
    """log (1/k) sum_k w_k, the IWAE bound (Burda et al. 2016), evaluated in chunks over k.

    The logsumexp of the chunk logsumexps is exactly the logsumexp over all k, so memory
    is bounded by `chunk` samples at a time whatever k is.
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
