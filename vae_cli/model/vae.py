"""The VAE as a plain nn.Module: q(z|x), p(z), p(x|z). No training logic lives here.

Two models, picked by `stochastic_layers`: the 1-layer VAE and the IWAE paper's
2-stochastic-layer model (`vae_cli.model.hierarchical`). The estimators only use the methods both
share, so the ELBO and the importance-weighted bound work for either:

    sample_posterior(x, k, log_q) -> Latents  k reparameterised draws of every layer, log q
    log_prior(zs)          -> (k, B)    log p(z) of the whole latent hierarchy
    log_likelihood(x, zs)  -> (k, B)    log p(x | bottom layer)
    posterior_means(x)     -> per-layer E_q[z|x], for active units
    decode_prior(z)        -> p(x|z) for a draw z of the top layer's N(0, I) prior
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from vae_cli.model import likelihoods, networks
from vae_cli.model.likelihoods import Likelihood
from vae_cli.model.networks import Shape
from vae_cli.model.priors import StandardNormal

if TYPE_CHECKING:  # a registry is a leaf: it takes a config, it never imports one
    from vae_cli.settings import Config


@dataclass(frozen=True)
class Latents:
    zs: tuple[Tensor, ...]  # one (k, B, L_i) draw per stochastic layer, bottom (nearest x) first
    log_q: Tensor | None  # (k, B): log q(all layers | x) at those draws; None if not asked for
    kl: Tensor | None  # (B,): KL(q || p) in closed form where one exists, else None


class LatentModel(Protocol):
    """What the estimators need of a model; VAE and hierarchical.TwoLayerVAE both have it."""

    latent_dim: int
    layer_dims: tuple[int, ...]

    def sample_posterior(self, x: Tensor, k: int, log_q: bool = True) -> Latents: ...
    def log_prior(self, zs: tuple[Tensor, ...]) -> Tensor: ...
    def log_likelihood(self, x: Tensor, zs: tuple[Tensor, ...]) -> Tensor: ...
    def posterior_means(self, x: Tensor) -> tuple[Tensor, ...]: ...
    def decode_prior(self, z: Tensor) -> Distribution: ...


def diagonal_gaussian(params: Tensor) -> Independent:
    """(..., 2L) network output -> N(mu, diag(exp(logvar))), in float32 (see VAE.posterior)."""
    mu, logvar = params.float().chunk(2, dim=-1)
    return Independent(Normal(mu, (0.5 * logvar).exp(), validate_args=False), 1)


def standard_normal(dim: int, like: Tensor) -> Independent:
    """N(0, I) in float32 on like's device; its KL from a Normal is registered in closed form."""
    return Independent(StandardNormal.of(dim, like.device), 1)


def float32_maths(x: Tensor) -> torch.autocast:
    """Autocast off on x's device: density sums over many dimensions stay in float32, while
    the networks that produce their parameters may run in bf16/fp16 under --precision."""
    return torch.autocast(x.device.type, enabled=False)


def decode_log_prob(conditional: Callable[[Tensor], Distribution], x: Tensor, z: Tensor) -> Tensor:
    """log p(x|z) for z of shape (k, B, L): the k draws go through the decoder as one batch."""
    k = z.shape[0]
    xk = x.unsqueeze(0).expand(k, *x.shape).reshape(-1, *x.shape[1:])
    p = conditional(z.reshape(-1, z.shape[-1]))
    with float32_maths(x):
        return p.log_prob(xk.float()).view(k, -1)


class VAE(nn.Module):
    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, likelihood: Likelihood, latent_dim: int
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.layer_dims = (latent_dim,)

    @classmethod
    def from_config(cls, cfg: Config, shape: Shape) -> VAE:
        lik = likelihoods.build(cfg)
        enc, dec = networks.build(cfg.arch, shape, cfg.latent_dim, cfg.hidden_dim, lik.params_per_channel)
        return cls(enc, dec, lik, cfg.latent_dim)

    # Densities are built from float32 parameters even under autocast: log-likelihoods and
    # KL summed over hundreds of dimensions lose nats in half precision.
    def posterior(self, x: Tensor) -> Independent:
        return diagonal_gaussian(self.encoder(self.likelihood.encoder_input(x)))

    def prior(self, like: Tensor) -> Independent:
        return standard_normal(self.latent_dim, like)

    def conditional(self, z: Tensor) -> Distribution:
        """p(x|z) for z of shape (N, latent)."""
        return self.likelihood(self.decoder(z).float())

    def sample_posterior(self, x: Tensor, k: int, log_q: bool = True) -> Latents:
        """log_q=False when the caller uses the closed-form KL: the training ELBO then
        builds no log q(z|x) graph it would not use."""
        q = self.posterior(x)
        z = q.rsample((k,))
        return Latents((z,), q.log_prob(z) if log_q else None, kl_divergence(q, self.prior(x)))

    def log_prior(self, zs: tuple[Tensor, ...]) -> Tensor:
        return self.prior(zs[0]).log_prob(zs[0])

    def log_likelihood(self, x: Tensor, zs: tuple[Tensor, ...]) -> Tensor:
        return decode_log_prob(self.conditional, x, zs[0])

    def posterior_means(self, x: Tensor) -> tuple[Tensor, ...]:
        return (self.posterior(x).mean,)

    def decode_prior(self, z: Tensor) -> Distribution:
        return self.conditional(z)
