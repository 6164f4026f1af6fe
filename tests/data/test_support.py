"""data/support.py: binarisation and dequantisation draw what they claim."""

from __future__ import annotations

import torch

from vae_cli.data.support import to_unit_support


def test_dynamic_binarisation_draws_fresh_pixels_each_batch():
    x = torch.full((1000,), 128, dtype=torch.uint8)
    a, b = to_unit_support(x, "binary", "dynamic"), to_unit_support(x, "binary", "dynamic")
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(a, b)
    assert abs(a.mean().item() - 128 / 255) < 0.06  # Bernoulli(128/255), 1000 draws: 4 sigma
    assert torch.equal(to_unit_support(x, "binary", "none"), x.float() / 255)


def test_dequantisation_fills_each_bin():
    x = torch.tensor([0, 255] * 500, dtype=torch.uint8)
    y = to_unit_support(x, "unit", "dynamic")
    assert ((y[0::2] >= 0) & (y[0::2] < 1 / 256)).all()
    assert ((y[1::2] >= 255 / 256) & (y[1::2] < 1)).all()
    assert torch.equal(to_unit_support(x, "discrete", "dynamic"), x.float())


def test_binarisation_draws_bernoulli_pixel_over_255():
    """Every grey level k is 1 with frequency k/255 (binomial tolerance), 0 never, 255 always."""
    levels = torch.arange(256, dtype=torch.uint8)
    n = 4000
    x = levels.repeat(n, 1)
    g = torch.Generator().manual_seed(0)
    freq = to_unit_support(x, "binary", "dynamic", generator=g).mean(0).double()
    p = levels.double() / 255
    sd = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 5 * sd + 1e-12).all()
    assert freq[0] == 0 and freq[255] == 1
