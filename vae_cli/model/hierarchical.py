"""The IWAE paper's model with two stochastic layers (Burda et al. 2016, section 5):

    q(z1|x)  x -> 200 -> 200 -> z1 (100)     p(x|z1)  z1 -> 200 -> 200 -> x
    q(z2|z1) z1 -> 100 -> 100 -> z2 (50)     p(z1|z2) z2 -> 100 -> 100 -> z1,   p(z2) = N(0, I)

tanh everywhere, diagonal Gaussians. With the default latent_dim 50 and hidden_dim 200 the
sizes are the paper's: z2 = latent_dim, z1 = 2 * latent_dim, the z1<->z2 nets hidden_dim / 2.
There is no closed-form KL(q(z1, z2|x) || p(z1, z2)), so the ELBO uses a one-sample estimate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn
from torch.distributions import Distribution

from vae_cli.model import likelihoods, networks
from vae_cli.model.likelihoods import Likelihood
from vae_cli.model.networks import Shape
from vae_cli.model.vae import Latents, decode_log_prob, diagonal_gaussian, standard_normal

if TYPE_CHECKING:  # a registry is a leaf: it takes a config, it never imports one
    from vae_cli.settings import Config


def gaussian_mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """d_in -> hidden -> hidden -> (mu, logvar) of a d_out Gaussian."""
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.Tanh(),
        nn.Linear(hidden, hidden), nn.Tanh(),
        nn.Linear(hidden, 2 * d_out),
    )  # fmt: skip


class TwoLayerVAE(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        z1_dim: int,
        z2_dim: int,
        hidden2: int,
    ) -> None:
        super().__init__()
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.encoder2 = gaussian_mlp(z1_dim, hidden2, z2_dim)  # q(z2|z1)
        self.decoder2 = gaussian_mlp(z2_dim, hidden2, z1_dim)  # p(z1|z2)
        self.latent_dim = z2_dim  # what a prior draw has: the top layer
        self.layer_dims = (z1_dim, z2_dim)

    @classmethod
    def from_config(cls, cfg: Config, shape: Shape) -> TwoLayerVAE:
        lik = likelihoods.build(cfg)
        z1 = 2 * cfg.latent_dim
        enc, dec = networks.build("mlp", shape, z1, cfg.hidden_dim, lik.params_per_channel)
        return cls(enc, dec, lik, z1, cfg.latent_dim, max(cfg.hidden_dim // 2, 1))

    def conditional(self, z1: Tensor) -> Distribution:
        """p(x|z1) for z1 of shape (N, z1_dim)."""
        return self.likelihood(self.decoder(z1).float())

    def sample_posterior(self, x: Tensor, k: int, log_q: bool = True) -> Latents:
        """log q is always returned: without a closed-form KL every estimator needs it."""
        q1 = diagonal_gaussian(self.encoder(self.likelihood.encoder_input(x)))
        z1 = q1.rsample((k,))  # (k, B, L1)
        q2 = diagonal_gaussian(self.encoder2(z1))
        z2 = q2.rsample()  # (k, B, L2)
        return Latents((z1, z2), q1.log_prob(z1) + q2.log_prob(z2), None)

    def log_prior(self, zs: tuple[Tensor, ...]) -> Tensor:
        z1, z2 = zs
        return standard_normal(self.latent_dim, z2).log_prob(z2) + diagonal_gaussian(
            self.decoder2(z2)
        ).log_prob(z1)

    def log_likelihood(self, x: Tensor, zs: tuple[Tensor, ...]) -> Tensor:
        return decode_log_prob(self.conditional, x, zs[0])

    def posterior_means(self, x: Tensor, n: int = 100) -> tuple[Tensor, ...]:
        """E_q[z1|x] exactly; E_q[z2|x] = E_{q(z1|x)} E[z2|z1] by an n-sample average."""
        q1 = diagonal_gaussian(self.encoder(self.likelihood.encoder_input(x)))
        mu2 = diagonal_gaussian(self.encoder2(q1.sample((n,)))).mean.mean(0)
        return q1.mean, mu2

    def decode_prior(self, z2: Tensor) -> Distribution:
        """Ancestral sampling: z1 ~ p(z1|z2), then p(x|z1)."""
        return self.conditional(diagonal_gaussian(self.decoder2(z2)).sample())
