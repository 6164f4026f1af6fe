"""Encoder/decoder networks, registered by architecture name.

An encoder maps images (B, C, H, W) to (B, 2 * latent): the mean and log-variance of
q(z|x). A decoder maps z (B, latent) to likelihood parameters (B, P * C, H, W), where P is
the likelihood's parameters per data channel. Networks know nothing about distributions.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

from torch import nn

from vae_cli.errors import VaeError

Shape = tuple[int, int, int]  # (C, H, W)
Builder = Callable[[Shape, int, int, int], tuple[nn.Module, nn.Module]]

ARCHITECTURES: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def add(fn: Builder) -> Builder:
        ARCHITECTURES[name] = fn
        return fn

    return add


@register("mlp")
def mlp(shape: Shape, latent: int, hidden: int, params_per_channel: int):
    """The IWAE paper's 1-layer model: D-200-200-(2x50) tanh encoder, mirrored decoder."""
    d = prod(shape)
    encoder = nn.Sequential(
        nn.Flatten(),
        nn.Linear(d, hidden), nn.Tanh(),
        nn.Linear(hidden, hidden), nn.Tanh(),
        nn.Linear(hidden, 2 * latent),
    )  # fmt: skip
    c, h, w = shape
    decoder = nn.Sequential(
        nn.Linear(latent, hidden), nn.Tanh(),
        nn.Linear(hidden, hidden), nn.Tanh(),
        nn.Linear(hidden, params_per_channel * d),
        nn.Unflatten(1, (params_per_channel * c, h, w)),
    )  # fmt: skip
    return encoder, decoder


@register("conv")
def conv(shape: Shape, latent: int, hidden: int, params_per_channel: int):
    """Two stride-2 convolutions each way; any H, W divisible by 4 (8, 28, 32, ...)."""
    c, h, w = shape
    if h % 4 or w % 4:
        raise VaeError(f"arch conv needs height and width divisible by 4, got {h}x{w}; use --arch mlp")
    feat = (64, h // 4, w // 4)
    encoder = nn.Sequential(
        nn.Conv2d(c, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(prod(feat), hidden), nn.ReLU(),
        nn.Linear(hidden, 2 * latent),
    )  # fmt: skip
    decoder = nn.Sequential(
        nn.Linear(latent, hidden), nn.ReLU(),
        nn.Linear(hidden, prod(feat)), nn.ReLU(),
        nn.Unflatten(1, feat),
        nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, params_per_channel * c, 4, 2, 1),
    )  # fmt: skip
    return encoder, decoder


def build(arch: str, shape: Shape, latent: int, hidden: int, params_per_channel: int):
    return ARCHITECTURES[arch](shape, latent, hidden, params_per_channel)
