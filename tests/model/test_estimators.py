"""ELBO and IW bound against the exact log-likelihood of a linear-Gaussian model."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from vae_cli.model import estimators
from vae_cli.model.likelihoods import GaussianLikelihood
from vae_cli.model.vae import VAE

D, L, SIGMA = 6, 2, 0.5


def linear_gaussian_vae(seed: int = 0) -> tuple[VAE, nn.Linear]:
    """p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I): log p(x) = log N(x; b, WW^T + sigma^2 I)."""
    torch.manual_seed(seed)
    decoder_linear = nn.Linear(L, D)
    decoder = nn.Sequential(decoder_linear, nn.Unflatten(1, (1, 1, D)))
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(D, 2 * L))  # deliberately not the true posterior
    return VAE(encoder, decoder, GaussianLikelihood(SIGMA), L), decoder_linear


def exact_log_px(lin: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    w, b = lin.weight.double(), lin.bias.double()
    cov = w @ w.T + SIGMA**2 * torch.eye(D, dtype=torch.float64)
    return MultivariateNormal(b, cov).log_prob(x.double().view(len(x), D))


def set_near_posterior_encoder(vae: VAE, lin: nn.Linear, inflate: float = 1.5) -> None:
    """Diagonal q with the true posterior mean and an inflated diagonal of its covariance.

    The true posterior N(S W^T (x-b) / s^2, S), S = (I + W^T W / s^2)^-1, has a full covariance,
    so a diagonal q still leaves a gap; inflating the variance keeps the proposal heavy-tailed
    enough for the importance weights to converge.
    """
    w, b = lin.weight.detach(), lin.bias.detach()
    post_cov = torch.linalg.inv(torch.eye(L) + w.T @ w / SIGMA**2)
    a = post_cov @ w.T / SIGMA**2
    enc = vae.encoder[1]
    with torch.no_grad():
        enc.weight.zero_()
        enc.bias.zero_()
        enc.weight[:L] = a
        enc.bias[:L] = -a @ b
        enc.bias[L:] = (post_cov.diagonal() * inflate).log()


def test_elbo_is_below_exact_log_likelihood_and_iw_approaches_it():
    vae, lin = linear_gaussian_vae()
    set_near_posterior_encoder(vae, lin)
    x = torch.randn(16, 1, 1, D)
    log_px = exact_log_px(lin, x)
    with torch.no_grad():
        elbo = torch.stack([estimators.elbo(vae, x)["elbo"] for _ in range(2000)]).double().mean(0)
        iw = estimators.iw_bound(vae, x, k=20000, chunk=5000).double()
    gap = log_px - elbo
    assert (gap > 0).all(), "ELBO must lower-bound log p(x)"
    assert gap.mean() > 0.05, "a diagonal q leaves a visible gap"
    # IW with many samples closes the gap (Burda et al., Thm 1: monotone in k, -> log p(x)).
    assert (log_px - iw).abs().max() < 0.02 < gap.mean()


def test_elbo_terms_add_up_and_kl_is_analytic():
    vae, _ = linear_gaussian_vae(1)
    x = torch.randn(8, 1, 1, D)
    out = estimators.elbo(vae, x)
    torch.testing.assert_close(out["elbo"], out["recon"] - out["kl"])
    mu, logvar = vae.encoder(x).chunk(2, -1)
    std = (0.5 * logvar).exp()
    closed = 0.5 * (mu**2 + std**2 - 1 - 2 * std.log()).sum(-1)
    torch.testing.assert_close(out["kl"], closed, rtol=1e-5, atol=1e-5)
    q = Independent(Normal(mu, std), 1)
    p = Independent(Normal(torch.zeros(L), torch.ones(L)), 1)
    torch.testing.assert_close(out["kl"], kl_divergence(q, p))


def test_iw_with_one_sample_is_the_single_sample_elbo_estimator():
    vae, _ = linear_gaussian_vae(2)
    x = torch.randn(8, 1, 1, D)
    torch.manual_seed(5)
    lw = estimators.log_weights(vae, x, k=1)[0]
    torch.manual_seed(5)
    iw = estimators.iw_bound(vae, x, k=1)
    torch.testing.assert_close(iw, lw)


def test_bits_per_dim():
    nll = torch.tensor([784 * math.log(2.0)])
    torch.testing.assert_close(estimators.bits_per_dim(nll, 784), torch.tensor([1.0]))
    torch.testing.assert_close(estimators.bits_per_dim(nll, 784, 8.0), torch.tensor([9.0]))
