"""Data checks: a loader returns uint8 images of its declared shape, and what a model scores
lies in its likelihood's support. Bad data becomes a VaeError before any work starts."""

from __future__ import annotations

import torch
from torch import Tensor

from vae_cli.errors import VaeError

# What each support accepts, for the message.
SUPPORT_TEXT = {
    "binary": "pixels in {0, 1} (binarised from 8-bit data)",
    "unit": "values in [0, 1] (dequantised 8-bit data)",
    "discrete": "the integers 0..255",
}


def check_raw(name: str, x: Tensor, shape: tuple[int, ...], likelihood: str, support: str) -> None:
    """A dataset loader must return uint8 0..255 images of its declared shape."""
    if tuple(x.shape[1:]) != tuple(shape):
        raise VaeError(
            f'dataset "{name}" returned images of shape {_shape(tuple(x.shape[1:]))}, declared '
            f"{_shape(shape)}: fix the loader or its registered shape"
        )
    if x.dtype != torch.uint8:
        lo, hi = (float(v) for v in (x.min(), x.max())) if x.numel() else (0.0, 0.0)
        raise VaeError(
            f'dataset "{name}" gave {str(x.dtype).removeprefix("torch.")} values in [{lo:g}, {hi:g}], '
            f'outside what likelihood "{likelihood}" scores ({SUPPORT_TEXT[support]}): the loader '
            f"must return 8-bit images (uint8 0..255)"
        )


def check_support(x: Tensor, support: str, likelihood: str, what: str, binarize: str = "dynamic") -> None:
    """The data the model will score lies in the likelihood's support (eval splits, once)."""
    if x.numel() == 0:
        return
    if support == "binary":
        ok = bool(((x == 0) | (x == 1)).all()) if binarize != "none" else bool(((x >= 0) & (x <= 1)).all())
    elif support == "unit":
        ok = bool(((x >= 0) & (x <= 1)).all())
    else:
        ok = bool(((x >= 0) & (x <= 255) & (x == x.round())).all())
    if not ok:
        raise VaeError(
            f"{what} has values in [{float(x.min()):g}, {float(x.max()):g}], outside the support of "
            f'likelihood "{likelihood}" ({SUPPORT_TEXT[support]}): pick a likelihood for this data'
        )


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
