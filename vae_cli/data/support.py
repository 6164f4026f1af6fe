"""Putting 8-bit data on a likelihood's support (binarise, dequantise, integers), and back
to [0, 1] for display. See data/datamodule.py for when each transform is applied."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_cli.model.likelihoods import Support

EVAL_SEED = 1234  # the test split's one-time binarisation / dequantisation seed (see fixed_seed)
FIXED_SEED_OFFSETS = {"test": 0, "val": 1, "train": 2}  # train: only under --binarize static


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


def fixed_seed(split: str) -> int:
    """The seed of a split's one-time transform: test 1234, val 1235, static train 1236."""
    return EVAL_SEED + FIXED_SEED_OFFSETS[split]


def fixed_transform(x: Tensor, split: str, support: Support, binarize: str) -> Tensor:
    """A split's one-time binarisation / dequantisation, a function of (data, split) alone:
    it uses the first torch.rand(x.shape) draw of a fresh CPU generator seeded fixed_seed(split),
    so no other split's draw (and no setting that sizes one) can shift it."""
    return to_unit_support(x, support, binarize, torch.Generator().manual_seed(fixed_seed(split)))


def to_image(x: Tensor, support: Support) -> Tensor:
    """Model-space values -> [0, 1] for display."""
    if support == "discrete":
        return x / 255
    return x.clamp(0, 1)


def bits_offset(support: Support) -> float:
    """Bits per dim to add to a density on [0,1] to compare with a pmf over 256 levels."""
    return math.log2(256) if support == "unit" else 0.0
