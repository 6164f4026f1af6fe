"""Putting 8-bit data on a likelihood's support (binarise, dequantise, integers), and back
to [0, 1] for display. See data/datamodule.py for when each transform is applied."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_cli.errors import VaeError
from vae_cli.model.likelihoods import Support

EVAL_SEED = 1234  # the test split's one-time binarisation / dequantisation seed (see fixed_seed)
FIXED_SEED_OFFSETS = {"test": 0, "val": 1, "train": 2}  # train: only under --binarize static


def to_unit_support(x: Tensor, support: Support, binarize: str, generator=None) -> Tensor:
    """uint8 0..255 -> what the likelihood scores; random where the protocol says so.
    Float input is continuous data in [0, 1] (float arrays): see continuous_support."""
    if x.is_floating_point():
        return continuous_support(x, support, binarize, generator)
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


def continuous_support(x: Tensor, support: Support, binarize: str, generator=None) -> Tensor:
    """Floats in [0, 1] have no 8-bit grid: a density on [0, 1] scores them as they are (no
    dequantisation noise); binary likelihoods draw Bernoulli(x); no pmf over 256 levels."""
    if support == "binary" and binarize != "none":
        u = torch.rand(x.shape, generator=generator, device=x.device)
        return (u < x).float()
    if support == "discrete":
        raise VaeError(DISCRETE_ON_FLOATS)
    return x


DISCRETE_ON_FLOATS = (
    "float data in [0, 1] has no 8-bit grid, so a likelihood over the levels 0..255 cannot score it: "
    "use a density on [0, 1] (gaussian, laplace, continuous-bernoulli, ...) or pass uint8 data"
)


def to_image(x: Tensor, support: Support) -> Tensor:
    """Model-space values -> [0, 1] for display."""
    if support == "discrete":
        return x / 255
    return x.clamp(0, 1)


def bits_offset(support: Support, continuous: bool = False) -> float:
    """Bits per dim to add to a density on [0,1] to compare with a pmf over 256 levels; none
    for continuous (float) data, whose density is reported as it is."""
    return math.log2(256) if support == "unit" and not continuous else 0.0
