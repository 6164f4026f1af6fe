"""The VAE as a plain nn.Module: q(z|x), p(z), p(x|z). No training logic lives here."""

from __future__ import annotations

from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from vae_cli import likelihoods, networks
from vae_cli.config import Config
from vae_cli.likelihoods import Likelihood
from vae_cli.networks import Shape
from vae_cli.priors import StandardNormal


class VAE(nn.Module):
    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, likelihood: Likelihood, latent_dim: int
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.latent_dim = latent_dim

    @classmethod
    def from_config(cls, cfg: Config, shape: Shape) -> VAE:
        lik = likelihoods.build(cfg)
        enc, dec = networks.build(cfg.arch, shape, cfg.latent_dim, cfg.hidden_dim, lik.params_per_channel)
        return cls(enc, dec, lik, cfg.latent_dim)

    # Densities are built from float32 parameters even under autocast: log-likelihoods and
    # KL summed over hundreds of dimensions lose nats in half precision.
    def posterior(self, x: Tensor) -> Independent:
        mu, logvar = self.encoder(self.likelihood.encoder_input(x)).float().chunk(2, dim=-1)
        return Independent(Normal(mu, (0.5 * logvar).exp(), validate_args=False), 1)

    def prior(self, like: Tensor) -> Independent:
        return Independent(StandardNormal.of(self.latent_dim, like.device), 1)

    def conditional(self, z: Tensor) -> Distribution:
        """p(x|z) for z of shape (N, latent)."""
        return self.likelihood(self.decoder(z).float())
