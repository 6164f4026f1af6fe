"""Every registered likelihood family against independent references.

Each test is parametrised over the registry, and each family must have an entry in
REFERENCES (an independent float64 log-density written with numpy/scipy, not torch), so a
new family without its reference fails here rather than going untested.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from conftest import random_data
from scipy import integrate, special, stats
from torch.distributions import Bernoulli, ContinuousBernoulli, Normal

from vae_cli.config import Config
from vae_cli.model.likelihoods import LIKELIHOODS, LOG_SIGMA_FLOOR, Likelihood, build

FAMILIES = sorted(LIKELIHOODS)


K = 3  # mixture components in these tests


def make(name: str, dtype=torch.float64) -> Likelihood:
    lik = LIKELIHOODS[name].from_config(Config(likelihood=name, sigma=0.1, mixture_components=K))
    lik = lik.to(dtype).eval()
    # move learned scales off their initial value so a wrong scale cannot pass by accident
    with torch.no_grad():
        if hasattr(lik, "log_sigma"):
            lik.log_sigma.fill_(math.log(0.2))
        if hasattr(lik, "log_scale"):
            lik.log_scale.fill_(math.log(0.07))
        if hasattr(lik, "running_var"):
            lik.running_var.fill_(0.05**2)
    return lik


def random_params(lik: Likelihood, b: int, c: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Moderate decoder outputs of the right layout, (B, P*C, H, W)."""
    p = lik.params_per_channel
    params = torch.randn(b, p, c, h, w, generator=gen, dtype=torch.float64) * 2
    if lik.support == "unit" and not isinstance(lik.distribution(params[:, :1].flatten(1, 2)).base_dist,
                                                 ContinuousBernoulli):  # fmt: skip
        params[:, 0] = torch.rand(b, c, h, w, generator=gen, dtype=torch.float64)  # means in [0, 1]
    if lik.name == "gaussian-pixel":
        params[:, 1] = params[:, 1] - 2  # log-sigma around e^-2
    if lik.name == "logistic-mixture":
        params[:, K : 2 * K] = torch.rand(b, K, c, h, w, generator=gen, dtype=torch.float64) * 2 - 1
        params[:, 2 * K :] = torch.rand(b, K, c, h, w, generator=gen, dtype=torch.float64) * -4
    return params.flatten(1, 2)


def groups(params: torch.Tensor, lik: Likelihood) -> np.ndarray:
    """(B, P*C, H, W) -> numpy (P, B, C, H, W): the documented channel layout."""
    b, pc, h, w = params.shape
    p = lik.params_per_channel
    return params.view(b, p, pc // p, h, w).transpose(0, 1).detach().numpy()


# --------------------------------------------------------------------------- references
def ref_bernoulli(lik, g, x):
    return x * special.log_expit(g[0]) + (1 - x) * special.log_expit(-g[0])


def ref_continuous_bernoulli(lik, g, x):
    lam, one_minus_lam = special.expit(g[0]), special.expit(-g[0])  # 1 - lam without rounding
    # C(lam) = 2 artanh(1 - 2 lam) / (1 - 2 lam), -> 2 at lam = 1/2 (Loaiza-Ganem & Cunningham),
    # with 2 artanh(1 - 2 lam) = log((1 - lam) / lam) taken from the two log-probabilities
    with np.errstate(divide="ignore", invalid="ignore"):
        two_artanh = special.log_expit(-g[0]) - special.log_expit(g[0])
        log_c = np.where(np.abs(lam - 0.5) < 1e-6, math.log(2.0), np.log(two_artanh / (one_minus_lam - lam)))
    return log_c + x * special.log_expit(g[0]) + (1 - x) * special.log_expit(-g[0])


def ref_gaussian(lik, g, x):
    return stats.norm.logpdf(x, g[0], 0.1)


def ref_gaussian_learned(lik, g, x):
    return stats.norm.logpdf(x, g[0], 0.2)


def ref_gaussian_optimal(lik, g, x):  # eval mode: the running estimate
    return stats.norm.logpdf(x, g[0], 0.05)


def ref_gaussian_pixel(lik, g, x):
    log_sigma = LOG_SIGMA_FLOOR + np.logaddexp(0.0, g[1] - LOG_SIGMA_FLOOR)
    return stats.norm.logpdf(x, g[0], np.exp(log_sigma))


def ref_laplace(lik, g, x):
    return stats.laplace.logpdf(x, g[0], 0.1)


def ref_laplace_learned(lik, g, x):
    return stats.laplace.logpdf(x, g[0], 0.07)


def ref_categorical(lik, g, x):
    logp = special.log_softmax(g, axis=0)  # over the 256 groups
    return np.take_along_axis(logp, x.astype(np.int64)[None], axis=0)[0]


def ref_logistic_mixture(lik, g, x):
    """sum_k pi_k [F(upper) - F(lower)] with the logistic CDF, edges at +-infinity."""
    logits, means, log_s = g[:K], g[K : 2 * K], np.maximum(g[2 * K :], -7.0)
    xs, s = x / 127.5 - 1, np.exp(log_s)
    upper = np.where(x > 254.5, 1.0, stats.logistic.cdf(xs + 1 / 255, means, s))
    lower = np.where(x < 0.5, 0.0, stats.logistic.cdf(xs - 1 / 255, means, s))
    # right of a mean both CDFs are near 1: difference the survival functions there instead
    sf_lower = np.where(x < 0.5, 1.0, stats.logistic.sf(xs - 1 / 255, means, s))
    sf_upper = np.where(x > 254.5, 0.0, stats.logistic.sf(xs + 1 / 255, means, s))
    mass = np.where(xs > means, sf_lower - sf_upper, upper - lower)
    return np.log((special.softmax(logits, axis=0) * mass).sum(0))


REFERENCES = {
    "bernoulli": ref_bernoulli,
    "continuous-bernoulli": ref_continuous_bernoulli,
    "gaussian": ref_gaussian,
    "gaussian-learned": ref_gaussian_learned,
    "gaussian-optimal": ref_gaussian_optimal,
    "gaussian-pixel": ref_gaussian_pixel,
    "laplace": ref_laplace,
    "laplace-learned": ref_laplace_learned,
    "categorical": ref_categorical,
    "logistic-mixture": ref_logistic_mixture,
}


def test_every_family_has_a_reference():
    assert set(REFERENCES) == set(LIKELIHOODS), "add a reference (and tests) for every family"


@pytest.mark.parametrize("name", FAMILIES)
def test_log_prob_matches_independent_reference(name):
    gen = torch.Generator().manual_seed(0)
    lik = make(name)
    params = random_params(lik, 5, 2, 3, 4, gen)
    x = random_data(lik.support, (5, 2, 3, 4), gen)
    dist = lik(params)
    assert dist.event_shape == (2, 3, 4) and dist.batch_shape == (5,)
    got = dist.log_prob(x).detach().numpy()
    want = REFERENCES[name](lik, groups(params, lik), x.numpy()).reshape(5, -1).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-8)


def test_gaussian_optimal_uses_the_batch_mse_while_training():
    lik = make("gaussian-optimal").train()
    gen = torch.Generator().manual_seed(1)
    mu = torch.rand(6, 1, 4, 4, generator=gen, dtype=torch.float64)
    x = torch.rand(6, 1, 4, 4, generator=gen, dtype=torch.float64)
    sigma = float(np.sqrt(((x - mu).numpy() ** 2).mean()))  # one sigma for the whole batch
    got = lik(mu).log_prob(x).detach().numpy()
    want = stats.norm.logpdf(x.numpy(), mu.numpy(), sigma).reshape(6, -1).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # the running estimate moved from 0.05^2 towards sigma^2 by the documented momentum
    m = lik.momentum
    assert float(lik.running_var) == pytest.approx((1 - m) * 0.05**2 + m * sigma**2, rel=1e-9)


# --------------------------------------------------------------------------- normalisation
# beyond |l| ~ 15.9 torch's own ContinuousBernoulli clamps sigmoid(l) in float32
CB_LOGITS = [0.0, 1e-3, -3e-3, 0.02, 2.0, -10.0, 10.0, 20.0, -20.0, 30.0, -30.0, 88.0, -88.0]


def extreme_params(lik: Likelihood) -> torch.Tensor:
    """A spread of one-pixel parameter settings, including saturated ones: (N, P, 1, 1)."""
    gen = torch.Generator().manual_seed(2)
    p = lik.params_per_channel
    if lik.name == "logistic-mixture":
        rows = [
            # K mixture logits, K means (in [-1, 1] units), K log-scales
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [50.0, -50.0, 0.0, -1.5, 0.3, 1.5, -7.0, -9.0, 3.0],  # beyond the edges, floor
            [1.0, 2.0, -1.0, -0.999, 0.0, 0.999, -7.0, -7.0, -7.0],
            [0.0, 0.0, 0.0, 0.1, 0.5, -0.4, -2.0, -1.0, -3.0],
        ]
        return torch.tensor(rows, dtype=torch.float64).view(len(rows), p, 1, 1)
    if lik.name == "categorical":
        rows = torch.randn(4, p, generator=gen, dtype=torch.float64) * 3
        rows[1] = -50.0
        rows[1, 7] = 50.0
        return rows.view(4, p, 1, 1)
    if lik.name == "continuous-bernoulli":  # lambda = 1/2 exactly, near 1/2, near 0 and 1
        return torch.tensor(CB_LOGITS, dtype=torch.float64).view(-1, 1, 1, 1)
    if lik.name == "gaussian-pixel":  # (mean, raw log-sigma), down to the floor
        rows = [[0.5, -1.0], [0.0, -50.0], [1.0, LOG_SIGMA_FLOOR], [0.3, 1.0]]
        return torch.tensor(rows, dtype=torch.float64).view(len(rows), 2, 1, 1)
    return torch.tensor([0.0, 0.3, 1.0, -0.5, 50.0], dtype=torch.float64).view(-1, 1, 1, 1)


def one_pixel_log_prob(dist, value: float, row: int) -> float:
    x = torch.full((dist.batch_shape[0], 1, 1, 1), value, dtype=torch.float64)
    return float(dist.log_prob(x)[row].detach())


@pytest.mark.parametrize("name", FAMILIES)
def test_normalised(name):
    lik = make(name)
    params = extreme_params(lik)
    dist = lik(params)
    n = len(params)
    if lik.support == "discrete":
        values = torch.arange(256, dtype=torch.float64).view(256, 1, 1, 1, 1).expand(256, n, 1, 1, 1)
        total = torch.logsumexp(dist.log_prob(values), dim=0)
        np.testing.assert_allclose(total.numpy(), 0.0, atol=1e-10)
    elif lik.support == "binary":
        total = [sum(math.exp(one_pixel_log_prob(dist, v, i)) for v in (0, 1)) for i in range(n)]
        np.testing.assert_allclose(total, 1.0, atol=1e-12)
    else:
        for i in range(n):
            if isinstance(dist.base_dist, ContinuousBernoulli):
                lo, hi, points = 0.0, 1.0, [1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999]
            else:  # a density on the real line: all but e^-60 of its mass within 60 sd
                mean, sd = float(dist.mean[i].flatten()[0]), float(dist.stddev[i].flatten()[0].detach())
                lo, hi, points = mean - 60 * sd, mean + 60 * sd, [mean - sd, mean, mean + sd]
            total, err = integrate.quad(
                lambda v, i=i: math.exp(one_pixel_log_prob(dist, v, i)), lo, hi,
                points=points, limit=100, epsabs=1e-10, epsrel=1e-9,
            )  # fmt: skip
            assert total == pytest.approx(1.0, abs=1e-7), (name, params[i].flatten().tolist(), total, err)


# --------------------------------------------------------------------------- means, samples
def reference_log_density(name: str, lik: Likelihood, row: np.ndarray):
    """v -> log p(v) of one pixel under the REFERENCES density; row is (P, 1, 1, 1, 1)."""
    return lambda v: float(REFERENCES[name](lik, row, np.full((1, 1, 1, 1), v)).ravel()[0])


def reference_moment(name: str, lik: Likelihood, params: torch.Tensor, f=lambda v, log_p: v) -> np.ndarray:
    """E[f(x, log p(x))] per one-pixel row of params (N, P, 1, 1) under the REFERENCES
    density (numpy / scipy, float64, never the class): a sum over the support for discrete
    families, adaptive quadrature for densities (asserting the mass it finds is 1, so the
    range was wide enough)."""
    g = groups(params, lik)  # (P, N, 1, 1, 1)
    out = []
    for i in range(len(params)):
        row = g[:, i : i + 1]
        if lik.support != "unit":
            values = np.arange(256.0) if lik.support == "discrete" else np.array([0.0, 1.0])
            rows = np.broadcast_to(row, (row.shape[0], len(values), 1, 1, 1))
            log_p = REFERENCES[name](lik, rows, values.reshape(-1, 1, 1, 1)).ravel()
            assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-12)
            out.append(float((f(values, log_p) * np.exp(log_p)).sum()))
            continue
        log_density = reference_log_density(name, lik, row)
        lo, hi, points = quadrature_range(name, row)
        quad = lambda h, lo=lo, hi=hi, points=points: integrate.quad(  # noqa: E731
            h, lo, hi, points=points, limit=200, epsabs=1e-12, epsrel=1e-11
        )[0]
        assert quad(lambda v, d=log_density: math.exp(d(v))) == pytest.approx(1.0, abs=1e-8), (name, i)
        out.append(quad(lambda v, d=log_density: f(v, d(v)) * math.exp(d(v))))
    return np.array(out)


def quadrature_range(name: str, row: np.ndarray) -> tuple[float, float, list[float]]:
    """Where a one-pixel density lives, and break points for quad near its peak."""
    if name == "continuous-bernoulli":
        return 0.0, 1.0, [1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1 - 1e-4]
    loc = float(row[0].ravel()[0])  # the real-line families: the first group is the location
    return loc - 200, loc + 200, [loc + d for d in (-1, -0.1, -0.01, -1e-3, 0, 1e-3, 0.01, 0.1, 1)]


@functools.cache
def reference_mean(name: str) -> np.ndarray:
    """The reference mean at extreme_params, integrated once (quadrature through numpy
    callbacks takes ~0.5 s a family) for both tests that compare against it."""
    lik = make(name)
    return reference_moment(name, lik, extreme_params(lik))


@pytest.mark.parametrize("name", FAMILIES)
def test_mean_is_the_densitys_first_moment(name):
    """`mean` (what `vae sample` shows) vs the mean of the independent reference density."""
    lik = make(name)
    params = extreme_params(lik)
    got = lik(params).mean.detach().numpy().reshape(len(params))
    want = reference_mean(name)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", FAMILIES)
def test_sample_mean_matches_the_densitys_mean(name):
    """Empirical mean of N draws of sample() (what `--stochastic` shows) vs the reference
    density's mean, not vs `mean`: within 5 standard errors (a false alarm has probability
    ~6e-7 per value under the CLT; the seed is fixed anyway)."""
    torch.manual_seed(3)
    lik = make(name)
    params = extreme_params(lik)
    dist = lik(params)
    n = 40_000
    draws = dist.sample((n,)).double()
    assert draws.shape == (n, *dist.batch_shape, *dist.event_shape)
    if lik.support == "discrete":
        assert bool(((draws >= 0) & (draws <= 255) & (draws == draws.round())).all())
    emp, sem = draws.mean(0).flatten().numpy(), (draws.std(0) / math.sqrt(n)).flatten().numpy()
    want = reference_mean(name)
    assert np.all(np.abs(emp - want) <= 5 * sem + 1e-9), (emp, want, sem)


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("fill", [50.0, -50.0])
def test_gradients_finite_at_extremes(name, fill):
    """float32 as in training: saturated outputs, scales at their floor, data on the edges."""
    lik = make(name, torch.float32).train()
    p = lik.params_per_channel
    params = torch.full((2, p, 2, 2), fill)
    if name == "gaussian-pixel":
        params[:, 1] = -50.0  # log-sigma pinned at the floor
    if name == "logistic-mixture":
        params[:, 2 * K :] = -50.0  # log-scales below the -7 clamp
        params[:, K : 2 * K] = torch.tensor([-1.0, 0.0, 1.0]).view(1, K, 1, 1)
    params.requires_grad_(True)
    top = {"binary": 1.0, "unit": 1.0, "discrete": 255.0}[lik.support]
    x = torch.tensor([0.0, top, top, 0.0]).view(1, 1, 2, 2).expand(2, 1, 2, 2)
    logp = lik(params).log_prob(x)
    assert torch.isfinite(logp).all(), logp
    logp.sum().backward()
    assert torch.isfinite(params.grad).all()
    for param in lik.parameters():
        assert torch.isfinite(param.grad).all()


SHAPE = (3, 1, 4, 5)  # B, C, H, W


def test_bernoulli_log_prob_is_summed_per_pixel_log_prob():
    logits = torch.randn(SHAPE) * 3
    x = torch.bernoulli(torch.full(SHAPE, 0.5))
    lik = build(Config(likelihood="bernoulli"))
    got = lik(logits).log_prob(x)
    # independent: probabilities (not logits), per pixel, summed by hand
    p = torch.sigmoid(logits.double())
    want = (x * p.log() + (1 - x) * (1 - p).log()).sum(dim=(1, 2, 3))
    assert got.shape == (3,)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got, Bernoulli(logits=logits).log_prob(x).sum(dim=(1, 2, 3)))


def test_bernoulli_mean_and_samples():
    logits = torch.randn(SHAPE)
    dist = build(Config(likelihood="bernoulli"))(logits)
    torch.testing.assert_close(dist.mean, torch.sigmoid(logits))
    s = dist.sample()
    assert set(s.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("sigma", [0.05, 0.1, 1.0])
def test_gaussian_log_prob_includes_constant(sigma: float):
    mu = torch.rand(SHAPE)
    x = torch.rand(SHAPE)
    got = build(Config(likelihood="gaussian", sigma=sigma))(mu).log_prob(x)
    torch.testing.assert_close(got, Normal(mu, sigma).log_prob(x).sum(dim=(1, 2, 3)))
    # The closed form: what a pixel-averaged MSE drops is the scale and this constant.
    d = math.prod(SHAPE[1:])
    sse = ((x - mu) ** 2).sum(dim=(1, 2, 3))
    closed = -sse / (2 * sigma**2) - d * math.log(sigma) - d / 2 * math.log(2 * math.pi)
    torch.testing.assert_close(got, closed, rtol=1e-5, atol=1e-3)


def test_gaussian_learned_sigma_is_a_parameter_with_gradient():
    lik = build(Config(likelihood="gaussian-learned", sigma=0.3))
    mu, x = torch.rand(SHAPE), torch.rand(SHAPE)
    lp = lik(mu).log_prob(x)
    torch.testing.assert_close(lp, Normal(mu, 0.3).log_prob(x).sum(dim=(1, 2, 3)))
    lp.sum().backward()
    assert lik.log_sigma.grad is not None and lik.log_sigma.grad.abs() > 0
    # at the optimum sigma^2 = MSE, the gradient of the summed log-density vanishes
    mse = ((x - mu) ** 2).mean()
    lik.log_sigma.data = 0.5 * mse.log()
    lik.log_sigma.grad = None
    lik(mu).log_prob(x).sum().backward()
    assert abs(lik.log_sigma.grad.item()) < 1e-3


def test_every_registered_family_declares_its_shape_and_support():
    for name, cls in LIKELIHOODS.items():
        assert cls.name == name
        assert cls.params_per_channel >= 1
        assert cls.support in ("binary", "unit", "discrete")
