"""Training objectives, registered by name: (vae, batch, config, step) -> (loss, terms).

`terms` are per-example tensors (or scalars) the module logs as train/<name>; the loss is
what the optimiser minimises. Pure functions of their inputs, like the estimators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vae_cli.model import estimators

if TYPE_CHECKING:  # a registry is a leaf: it takes a config, it never imports one
    from vae_cli.settings import Config


Objective = Callable[[torch.nn.Module, Tensor, "Config", int], tuple[Tensor, dict[str, Tensor]]]

OBJECTIVES: dict[str, Objective] = {}
TERMS: dict[str, tuple[str, ...]] = {}  # the per-example terms each objective returns


def register(name: str, terms: tuple[str, ...]) -> Callable[[Objective], Objective]:
    def add(fn: Objective) -> Objective:
        OBJECTIVES[name] = fn
        TERMS[name] = terms
        return fn

    return add


def kl_weight(beta: float, warmup_steps: int, step: int) -> float:
    """beta, ramped linearly from 0 over the first warmup_steps optimiser steps."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, step / warmup_steps)


@register("elbo", ("elbo", "recon", "kl"))
def elbo_objective(vae, x: Tensor, cfg: Config, step: int) -> tuple[Tensor, dict[str, Tensor]]:
    """-(E_q log p(x|z) - beta_t KL): the ELBO itself when beta_t = 1. The logged `elbo` is
    always the true ELBO (beta 1), so runs with different beta stay comparable."""
    out = estimators.elbo(vae, x, k=cfg.k)  # the paper's "VAE, k samples": k-sample average
    beta = kl_weight(cfg.beta, cfg.kl_warmup_steps, step)
    weighted = out["elbo"] if beta == 1.0 else out["recon"] - beta * out["kl"]
    loss = -weighted.mean()
    return loss, {**out, "beta": torch.tensor(beta)}


@register("iwae", ("elbo", "iw"))
def iwae_objective(vae, x: Tensor, cfg: Config, step: int) -> tuple[Tensor, dict[str, Tensor]]:
    """-mean over the batch of the K-sample IW bound; gradients flow through the
    reparameterised samples of every term (no analytic KL inside the bound)."""
    log_w = estimators.log_weights(vae, x, cfg.k)  # (K, B)
    bound = estimators.log_mean_exp(log_w).float()
    # mean of the K log-weights: an unbiased ELBO estimate from the same samples
    return -bound.mean(), {"iw": bound, "elbo": log_w.mean(0)}
