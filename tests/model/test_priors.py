"""model/priors.py: the standard normal prior's closed-form KL."""

from __future__ import annotations

import torch
from torch.distributions import Independent, Normal, kl_divergence

from vae_cli.model.priors import StandardNormal


def test_standard_normal_kl_equals_the_generic_normal_kl():
    torch.manual_seed(0)
    q = Independent(Normal(torch.randn(64, 8) * 3, torch.rand(64, 8) * 2 + 0.01), 1)
    fast = kl_divergence(q, Independent(StandardNormal.of(8, torch.device("cpu")), 1))
    generic = kl_divergence(q, Independent(Normal(torch.zeros(8), torch.ones(8)), 1))
    torch.testing.assert_close(fast, generic, rtol=1e-5, atol=1e-5)
    # and its log_prob is the standard normal's
    z = torch.randn(5, 8)
    torch.testing.assert_close(StandardNormal.of(8, z.device).log_prob(z), Normal(0.0, 1.0).log_prob(z))
