"""model/continuous_bernoulli.py: the continuous Bernoulli from its logit, in float32 and
half precision as the model runs, against float64 references (quadrature of the density,
closed forms), at saturated logits, near 0 and at the infinite limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special
from test_likelihoods import groups, make, reference_log_density, reference_moment

CB_FLOAT32 = [-88.0, -30.0, -20.0, -16.0, -1e-3, 0.0, 1e-3, 0.5, 16.0, 20.0, 30.0, 88.0]


def test_continuous_bernoulli_moments_from_the_logit_in_float32():
    """float32, as the model runs: mean, variance, CDF and entropy at saturated logits and
    near 0 against quadrature of the float64 reference density (torch's saturate beyond
    |l| ~ 15.9, where its mean at l = 30 is 0.937 instead of 0.967)."""
    dist = make("continuous-bernoulli", torch.float32)(torch.tensor(CB_FLOAT32).view(-1, 1, 1, 1)).base_dist
    ref, p64 = make("continuous-bernoulli"), torch.tensor(CB_FLOAT32, dtype=torch.float64).view(-1, 1, 1, 1)
    mean = reference_moment("continuous-bernoulli", ref, p64)
    np.testing.assert_allclose(dist.mean.flatten().numpy(), mean, rtol=1e-6)
    second = reference_moment("continuous-bernoulli", ref, p64, lambda v, log_p: v * v)
    np.testing.assert_allclose(dist.variance.flatten().numpy(), second - mean**2, rtol=1e-5, atol=1e-10)
    entropy = reference_moment("continuous-bernoulli", ref, p64, lambda v, log_p: -log_p)
    np.testing.assert_allclose(dist.entropy().flatten().numpy(), entropy, rtol=1e-5, atol=1e-5)
    g = groups(p64, ref)
    for x in (1e-3, 0.3, 0.97):
        cdf = [
            integrate.quad(lambda v, d=reference_log_density("continuous-bernoulli", ref, g[:, i : i + 1]):
                           math.exp(d(v)), 0.0, x, epsabs=1e-13, epsrel=1e-11, limit=200)[0]
            for i in range(len(CB_FLOAT32))
        ]  # fmt: skip
        got = dist.cdf(torch.full_like(dist.logits, x)).flatten().numpy()
        np.testing.assert_allclose(got, cdf, rtol=1e-5, atol=1e-30)


def test_continuous_bernoulli_samples_from_the_logit_in_float32():
    """float32 sample() and rsample() at the same logits: in [0, 1], their mean the reference
    density's (5 standard errors), and rsample's gradient finite everywhere, l = 0 included."""
    torch.manual_seed(5)
    logits = torch.tensor(CB_FLOAT32).view(-1, 1, 1, 1).requires_grad_(True)
    dist = make("continuous-bernoulli", torch.float32)(logits)
    n = 200_000
    draws = dist.sample((n,)).double().flatten(1)
    assert bool(((draws >= 0) & (draws <= 1)).all())
    want = reference_moment("continuous-bernoulli", make("continuous-bernoulli"), logits.detach().double())
    emp, sem = draws.mean(0).numpy(), (draws.std(0) / math.sqrt(n)).numpy()
    assert np.all(np.abs(emp - want) <= 5 * sem), (emp, want, sem)
    x = dist.rsample((1000,))
    assert torch.isfinite(x).all()
    x.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("logit", [-20.0, -16.0, -10.0, 0.005, 3.0, 12.0, 16.0, 20.0])
def test_continuous_bernoulli_float32_saturated_logits(logit):
    """float32, as in training: the normaliser stays right where sigmoid(logit) rounds to 1."""
    lik = make("continuous-bernoulli", torch.float32)
    x = torch.tensor([0.0, 0.3, 1.0]).view(3, 1, 1, 1)
    got = lik(torch.full((3, 1, 1, 1), logit)).log_prob(x).numpy()
    # float64 reference from the paper's lambda form, lambda via the log-odds (no 1 - lambda)
    lam, log_lam, log_1m = special.expit(logit), special.log_expit(logit), special.log_expit(-logit)
    log_c = math.log(2 * (log_1m - log_lam) / 2 / (1 - 2 * lam))  # 2 artanh(1-2lam) = log((1-lam)/lam)
    want = log_c + x.flatten().numpy() * log_lam + (1 - x.flatten().numpy()) * log_1m
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_continuous_bernoulli_mean_is_not_lambda():
    dist = make("continuous-bernoulli")(torch.full((1, 1, 1, 1), 2.0, dtype=torch.float64))
    lam = special.expit(2.0)
    want = lam / (2 * lam - 1) + 1 / (2 * np.arctanh(1 - 2 * lam))  # the CB mean, closed form
    assert float(dist.mean) == pytest.approx(want, rel=1e-10)
    assert abs(float(dist.mean) - lam) > 0.05


def test_continuous_bernoulli_infinite_logits_are_point_masses():
    """l = +-inf is the limit of the family, a point mass at 1 or 0: mean and draws agree there
    (inf inside the formulas would give inf - inf = NaN), and a NaN logit stays NaN."""
    logits = torch.tensor([math.inf, -math.inf, math.nan]).view(3, 1, 1, 1).requires_grad_(True)
    dist = make("continuous-bernoulli", torch.float32)(logits).base_dist
    draws = dist.rsample((1000,)).flatten(1)
    assert dist.mean.flatten()[:2].tolist() == pytest.approx([1.0, 0.0], abs=1e-30)
    assert bool((draws[:, 0] == 1).all()) and bool((draws[:, 1].abs() < 1e-30).all())
    assert bool(draws[:, 2].isnan().all())
    draws[:, :2].sum().backward()
    assert torch.isfinite(logits.grad[:2]).all()
    # log_prob broadcasts like torch's distributions: one logit, many values
    many = dist.log_prob(torch.full((8, 3, 1, 1, 1), 0.5))
    assert many.shape == (8, 3, 1, 1, 1) and bool((many[:, :2] < -1e30).all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("logit", [-1e4, -89.0, -30.0, 0.0, 30.0, 89.0, 1e4])
def test_continuous_bernoulli_half_precision_draws_match_the_mean(dtype, logit):
    """Decoder outputs in bf16/fp16 (--precision bf16-mixed): draws are made in float32 and
    rounded, so none is a spurious 0 at a large logit (a bf16 uniform is exactly 0 about once
    in 400 draws), and their mean is the reference density's within 5 standard errors plus
    the dtype's rounding of the values."""
    torch.manual_seed(7)
    dist = make("continuous-bernoulli", torch.float32)(torch.full((1, 1, 1, 1), logit, dtype=dtype))
    n = 50_000
    draws = dist.sample((n,)).double().flatten()
    assert dist.sample().dtype == dtype
    if logit > 50:
        assert bool((draws > 0.5).all())
    want = reference_moment(
        "continuous-bernoulli",
        make("continuous-bernoulli"),
        torch.full((1, 1, 1, 1), logit, dtype=torch.float64),
    )[0]
    rounding = torch.finfo(dtype).eps
    assert abs(float(draws.mean()) - want) <= 5 * float(draws.std()) / math.sqrt(n) + rounding
