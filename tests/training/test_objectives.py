"""training/objectives.py: KL warm-up and beta, the IWAE objective, bad objective settings."""

from __future__ import annotations

import pytest
import torch
from conftest import binary_batch, digits_module

from vae_cli.config import resolve
from vae_cli.errors import VaeError
from vae_cli.model import estimators
from vae_cli.training import objectives


# ---------------------------------------------------------------- objectives and schedule
def test_kl_warmup_is_linear_and_beta_weights_the_kl() -> None:
    assert [objectives.kl_weight(0.5, 100, s) for s in (0, 50, 100, 1000)] == [0.0, 0.25, 0.5, 0.5]
    assert objectives.kl_weight(2.0, 0, 0) == 2.0
    module = digits_module(beta=0.0)
    x = binary_batch()
    torch.manual_seed(0)
    loss, terms = objectives.OBJECTIVES["elbo"](module.vae, x, module.cfg, 10)
    torch.manual_seed(0)
    recon = estimators.elbo(module.vae, x)["recon"]
    assert torch.allclose(loss, -recon.mean())  # beta 0: the KL term is gone from the loss
    assert torch.allclose(terms["elbo"], terms["recon"] - terms["kl"])  # but not from the ELBO
    assert terms["beta"].item() == 0.0


def test_iwae_objective_is_the_negative_mean_iw_bound() -> None:
    module = digits_module(objective="iwae", k=7)
    x = binary_batch()
    torch.manual_seed(4)
    loss, terms = objectives.OBJECTIVES["iwae"](module.vae, x, module.cfg, 0)
    torch.manual_seed(4)
    bound = estimators.iw_bound(module.vae, x, 7)
    assert torch.allclose(loss, -bound.mean(), atol=1e-4)
    assert torch.allclose(terms["iw"], bound, atol=1e-4)
    loss.backward()  # gradients reach the encoder through the reparameterised samples
    assert module.vae.encoder[1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"k": 0}, "k must be >= 1"),
        ({"objective": "iwea"}, 'did you mean "iwae"'),
        ({"stochastic_layers": 3}, "stochastic_layers"),
        ({"objective": "iwae", "beta": 0.5}, "elbo objective only"),
        ({"schedule": "cosine"}, "schedule"),
    ],
)
def test_bad_objective_settings_are_clear_errors(overrides: dict, message: str) -> None:
    with pytest.raises(VaeError, match=message):
        resolve(overrides=overrides)
