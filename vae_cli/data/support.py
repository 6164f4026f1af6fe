"""Putting 8-bit data on a likelihood's support (binarise, dequantise, integers), and back
to [0, 1] for display. See data/datamodule.py for when each transform is applied."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_cli.model.likelihoods import Support

EVAL_SEED = 1234  # the fixed seed of the one-time eval binarisation / dequantisation


def to_unit_support(x: Tensor, support: Support, binarize: str, generator=None) -> Tensor:
    """uint8 0..255 -> what the likelihood scores; random where the protocol says so."""
    if support == "binary":
        if binarize == "none":
            return x.float() / 255
        # Bernoulli(x/255) as 1[255 u < x], u ~ U[0,1): the same draw as torch.bernoulli,
        # whose per-element CPU kernel took ~2.5x longer than this vectorised uniform fill.
        u = torch.rand(x.shape, generator=generator, device=x.device)
        return (u * 255 < x).float()
    if support == "unit":
        u = torch.rand(x.shape, generator=generator, device=x.device)
        return (x.float() + u) / 256
    return x.float()


def to_image(x: Tensor, support: Support) -> Tensor:
    """Model-space values -> [0, 1] for display."""
    if support == "discrete":
        return x / 255
    return x.clamp(0, 1)


def bits_offset(support: Support) -> float:
    """Bits per dim to add to a density on [0,1] to compare with a pmf over 256 levels."""
    return math.log2(256) if support == "unit" else 0.0
