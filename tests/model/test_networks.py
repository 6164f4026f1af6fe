"""--arch resnet: depth follows resolution, every likelihood family fits its decoder."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vae_cli.config import Config
from vae_cli.model import build as model
from vae_cli.model.likelihoods import LIKELIHOODS
from vae_cli.model.networks import build


@pytest.mark.parametrize(("size", "stages"), [(8, 1), (28, 2), (32, 3), (64, 4), (128, 5)])
def test_one_stride_two_stage_per_factor_two(size: int, stages: int):
    enc, dec = build("resnet", (3, size, size), 8, 16, 1)
    strided = [m for m in enc.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == stages
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in dec.modules()) == stages
    assert enc(torch.zeros(2, 3, size, size)).shape == (2, 16)


@pytest.mark.parametrize("size", [32, 64])
def test_parameter_count_by_hand(size: int):
    """Counted from the layer list: convs are k*k*in*out + out, linears in*out + out."""
    c, w, latent, ppc = 3, 16, 8, 2
    n = int(math.log2(size // 4))
    conv = lambda k, i, o: k * k * i * o + o  # noqa: E731
    block = 2 * conv(3, w, w)
    feat = w * 16  # 4x4 at the bottom
    enc = conv(3, c, w) + n * (block + conv(4, w, w)) + feat * 2 * latent + 2 * latent
    dec = latent * feat + feat + n * (block + conv(4, w, w)) + block + conv(3, w, ppc * c)
    e, d = build("resnet", (c, size, size), latent, w, ppc)
    assert sum(p.numel() for p in e.parameters()) == enc
    assert sum(p.numel() for p in d.parameters()) == dec


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
def test_every_likelihood_family_trains_a_step(likelihood: str):
    cfg = Config(arch="resnet", likelihood=likelihood, hidden_dim=8, latent_dim=4, dataset="shapes32")
    vae = model.build(cfg, (3, 16, 16))
    support = LIKELIHOODS[likelihood].support
    x = torch.rand(4, 3, 16, 16)
    x = (x > 0.5).float() if support == "binary" else (x * 255).round() if support == "discrete" else x
    z = vae.posterior(x).rsample()
    log_p = vae.conditional(z).log_prob(x)
    assert log_p.shape == (4,) and torch.isfinite(log_p).all()
    (-log_p.mean()).backward()
    assert all(p.grad is not None for p in vae.parameters() if p.requires_grad)
