"""log p(x|z) of the foundation families against torch.distributions and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from vae_cli.config import Config
from vae_cli.model.likelihoods import LIKELIHOODS, build

torch.manual_seed(0)
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
