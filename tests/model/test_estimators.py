"""model/estimators.py: ELBO and IW bound against exact log-likelihoods (linear-Gaussian
models), float64 references and float32 density maths under autocast."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import binary_batch, digits_module
from torch import nn
from torch.distributions import Bernoulli, Independent, MultivariateNormal, Normal, kl_divergence

from vae_cli.config import Config
from vae_cli.model import estimators
from vae_cli.model.likelihoods import GaussianLikelihood
from vae_cli.model.vae import VAE, Latents

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


@pytest.mark.slow  # > 5 s
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


# ---------------------------------------------------------------- K=1 and the ELBO
@pytest.mark.parametrize("layers", [1, 2])
def test_iw_bound_with_one_sample_is_the_elbo_on_the_same_noise(layers: int) -> None:
    vae = digits_module(stochastic_layers=layers).vae
    x = binary_batch()
    with torch.no_grad():
        torch.manual_seed(3)
        iw1 = estimators.iw_bound(vae, x, 1)
        torch.manual_seed(3)
        elbo = estimators.elbo(vae, x, analytic_kl=False)["elbo"]
    assert torch.allclose(iw1, elbo, atol=1e-4), (iw1 - elbo).abs().max()


def test_iw_bound_is_above_the_elbo_and_grows_with_k() -> None:
    """E[IW_K] is non-decreasing in K and E[IW_1] = ELBO (Burda et al., Theorem 1).

    Estimated from R repeats over 32 examples; each inequality must hold up to 3 standard
    errors of the mean difference (a chance failure is then about 1 in 700 per check).
    """
    vae = digits_module().vae
    x = binary_batch(32)
    repeats = 30
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([estimators.elbo(vae, x)["elbo"] for _ in range(repeats)])
        iw = {k: torch.stack([estimators.iw_bound(vae, x, k) for _ in range(repeats)]) for k in (1, 5, 50)}

    def at_least(hi: torch.Tensor, lo: torch.Tensor) -> None:
        diff = (hi - lo).flatten().double()
        se = diff.std() / math.sqrt(diff.numel())
        assert diff.mean() >= -3 * se, (diff.mean().item(), se.item())

    at_least(iw[1], elbo)  # equal in expectation: the check is two-sided below
    at_least(elbo, iw[1])
    at_least(iw[5], elbo)
    at_least(iw[5], iw[1])
    at_least(iw[50], iw[5])
    # and strictly: q(z|x) of an untrained encoder is not the posterior, so K=50 gains
    gain = (iw[50] - iw[1]).flatten().double()
    assert gain.mean() > 3 * gain.std() / math.sqrt(gain.numel()), gain.mean()


# ---------------------------------------------------------------- exact log p(x)
def linear_gaussian(d: int = 3, latent: int = 2, sigma: float = 0.5) -> tuple[VAE, MultivariateNormal]:
    """p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I): then p(x) = N(b, W W^T + sigma^2 I).

    The encoder is the exact posterior mean shifted by 0.25, with a diagonal, over-dispersed
    covariance, so q != p(z|x) (the ELBO is strictly below log p(x)) but importance sampling
    still converges.
    """
    g = torch.Generator().manual_seed(0)
    w = torch.randn(d, latent, generator=g)
    b = torch.randn(d, generator=g)
    post_cov = torch.linalg.inv(torch.eye(latent) + w.T @ w / sigma**2)
    gain = post_cov @ w.T / sigma**2  # E[z|x] = gain (x - b)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, 2 * latent))
    decoder = nn.Sequential(nn.Linear(latent, d), nn.Unflatten(1, (1, 1, d)))
    with torch.no_grad():
        encoder[1].weight.copy_(torch.cat([gain, torch.zeros(latent, d)]))
        encoder[1].bias.copy_(torch.cat([-gain @ b + 0.25, post_cov.diagonal().log() + 0.5]))
        decoder[0].weight.copy_(w)
        decoder[0].bias.copy_(b)
    vae = VAE(encoder, decoder, GaussianLikelihood(sigma), latent)
    marginal = MultivariateNormal(b.double(), (w @ w.T + sigma**2 * torch.eye(d)).double())
    return vae, marginal


def test_iw_estimate_converges_to_the_exact_log_likelihood_of_a_linear_gaussian() -> None:
    vae, marginal = linear_gaussian()
    torch.manual_seed(1)
    x = marginal.sample((64,)).float().view(64, 1, 1, 3)
    log_px = marginal.log_prob(x.view(64, 3).double())
    torch.manual_seed(2)
    with torch.no_grad():
        elbo = estimators.elbo(vae, x, k=2000)["elbo"].double()  # E_q by 2000 samples
        gaps = {k: (log_px - estimators.iw_bound(vae, x, k, chunk=1000).double()).mean().item()
                for k in (1, 10, 100, 5000)}  # fmt: skip
    assert (elbo <= log_px + 0.05).all()  # ELBO <= log p(x) per example, up to MC error
    assert (log_px - elbo).mean() > 0.1  # and strictly below: q is not the posterior
    # the gap log p(x) - IW_K shrinks with K (MC error at K=5000 is a few 0.001 nats)
    assert gaps[1] > 0.5 and gaps[10] < gaps[1] / 2 and abs(gaps[100]) < 0.2, gaps
    assert abs(gaps[5000]) < 0.01, gaps  # within 0.01 nats of the exact log p(x)


# ---------------------------------------------------------------- chunking
class ReplayNoise:
    """A 1-layer VAE whose posterior noise is read, in order, from one fixed tensor, so a
    chunked and an unchunked evaluation see exactly the same samples."""

    def __init__(self, vae: VAE, eps: torch.Tensor) -> None:
        self.vae, self.eps, self.used = vae, eps, 0

    def sample_posterior(self, x: torch.Tensor, k: int) -> Latents:
        q = self.vae.posterior(x)
        z = q.mean + q.stddev * self.eps[self.used : self.used + k]
        self.used += k
        return Latents((z,), q.log_prob(z), None)

    def log_prior(self, zs):
        return self.vae.log_prior(zs)

    def log_likelihood(self, x, zs):
        return self.vae.log_likelihood(x, zs)


def reference_iw(vae: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The IW bound written out in float64: Bernoulli logits, Gaussian densities by hand."""
    with torch.no_grad():
        mu, logvar = vae.encoder(x).double().chunk(2, dim=-1)
        std = (0.5 * logvar).exp()
        z = mu + std * eps.double()  # (K, B, L)
        logits = vae.decoder(z.float().flatten(0, 1)).double().view(*z.shape[:2], -1)
        xf = x.flatten(1).double()
        log_px_z = (xf * logits - torch.nn.functional.softplus(logits)).sum(-1)
        log_pz = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_q = (-0.5 * eps.double() ** 2 - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        lw = log_px_z + log_pz - log_q
        return torch.logsumexp(lw, 0) - math.log(len(eps))


def test_chunked_evaluation_equals_unchunked_and_a_float64_reference() -> None:
    vae = digits_module().vae
    x = binary_batch(8)
    k = 103  # not a multiple of the chunk: the last chunk is short
    eps = torch.randn(k, 8, vae.latent_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        whole = estimators.iw_bound(ReplayNoise(vae, eps), x, k)
        chunked = estimators.iw_bound(ReplayNoise(vae, eps), x, k, chunk=10)
    assert torch.allclose(whole, chunked, atol=1e-5, rtol=0)
    assert torch.allclose(chunked.double(), reference_iw(vae, x, eps), atol=1e-3, rtol=0)


def test_density_maths_is_float32_under_autocast():
    torch.manual_seed(0)
    vae = VAE.from_config(Config(latent_dim=4, hidden_dim=32), (1, 8, 8))
    x = torch.bernoulli(torch.full((16, 1, 8, 8), 0.3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(1)
        out = estimators.elbo(vae, x)
        # independent reference: the same (bf16) network outputs, densities in float64
        torch.manual_seed(1)
        mu, logvar = vae.encoder(x).double().chunk(2, dim=-1)
        q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
        # the same float32 reparameterised draw as the model's posterior
        z = Normal(mu.float(), (0.5 * logvar.float()).exp()).rsample()
        logits = vae.decoder(z).double()
    assert out["elbo"].dtype == torch.float32
    recon = Independent(Bernoulli(logits=logits.view_as(x)), 3).log_prob(x.double())
    kl = kl_divergence(q, Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1))
    assert torch.allclose(out["recon"].double(), recon, atol=1e-3)
    assert torch.allclose(out["kl"].double(), kl, atol=1e-4)
