"""model/hierarchical.py: the IWAE paper's two-stochastic-layer model (Burda et al. 2016,
section 5): its layer sizes from the default settings, and its prior
log p(z1, z2) = log N(z2; 0, I) + log p(z1 | z2) written out by hand in float64."""

from __future__ import annotations

import math

import torch
from torch import nn

from vae_cli.config import Config
from vae_cli.model.hierarchical import TwoLayerVAE


def linear_sizes(net: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]


def test_default_settings_give_the_papers_layer_sizes():
    """784-200-200-(2x100) to z1, 100-100-100-(2x50) to z2, and the mirror images back."""
    model = TwoLayerVAE.from_config(Config(stochastic_layers=2).validate(), (1, 28, 28))
    assert model.layer_dims == (100, 50) and model.latent_dim == 50
    assert linear_sizes(model.encoder) == [(784, 200), (200, 200), (200, 2 * 100)]
    assert linear_sizes(model.encoder2) == [(100, 100), (100, 100), (100, 2 * 50)]
    assert linear_sizes(model.decoder2) == [(50, 100), (100, 100), (100, 2 * 100)]
    assert linear_sizes(model.decoder) == [(100, 200), (200, 200), (200, 784)]


def log_normal(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((x - mu) ** 2 / logvar.exp() + logvar + math.log(2 * math.pi))).sum(-1)


def test_prior_is_the_top_normal_times_the_conditional_of_z1():
    torch.manual_seed(0)
    model = TwoLayerVAE.from_config(
        Config(stochastic_layers=2, latent_dim=3, hidden_dim=8).validate(), (1, 4, 4)
    )
    z1, z2 = torch.randn(2, 5, 6), torch.randn(2, 5, 3)  # (k, B, L1), (k, B, L2)
    with torch.no_grad():
        mu, logvar = model.decoder2(z2).double().chunk(2, dim=-1)
        z1d, z2d = z1.double(), z2.double()
        want = log_normal(z2d, torch.zeros_like(z2d), torch.zeros_like(z2d)) + log_normal(z1d, mu, logvar)
        got = model.log_prior((z1, z2))
    assert got.shape == (2, 5)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
