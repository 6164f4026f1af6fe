"""Encoder/decoder networks, registered by architecture name.

An encoder maps images (B, C, H, W) to (B, 2 * latent): the mean and log-variance of
q(z|x). A decoder maps z (B, latent) to likelihood parameters (B, P * C, H, W), where P is
the likelihood's parameters per data channel. Networks know nothing about distributions.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

from torch import Tensor, nn

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


class ResBlock(nn.Module):
    """x + conv(relu(conv(relu(x)))): a pre-activation residual block (He et al., 2016)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(width, width, 3, 1, 1),
            nn.ReLU(), nn.Conv2d(width, width, 3, 1, 1),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def halvings(h: int, w: int) -> int:
    """Stride-2 stages until a side reaches 4 or turns odd: 64 -> 4 (4x4), 32 -> 3, 28 -> 2 (7x7)."""
    n = 0
    while min(h, w) > 4 and h % 2 == 0 and w % 2 == 0:
        h, w, n = h // 2, w // 2, n + 1
    return n


@register("resnet")
def resnet(shape: Shape, latent: int, hidden: int, params_per_channel: int):
    """One residual block and one stride-2 convolution per factor 2 of resolution, `hidden`
    channels throughout (--hidden-dim is the width), a linear map to and from the latent."""
    c, h, w = shape
    n = halvings(h, w)
    if n == 0:
        raise VaeError(f"arch resnet needs an even height and width above 4, got {h}x{w}; use --arch mlp")
    feat = (hidden, h >> n, w >> n)
    down: list[nn.Module] = [nn.Conv2d(c, hidden, 3, 1, 1)]
    up: list[nn.Module] = [nn.Linear(latent, prod(feat)), nn.Unflatten(1, feat)]
    for _ in range(n):
        down += [ResBlock(hidden), nn.Conv2d(hidden, hidden, 4, 2, 1)]
        up += [ResBlock(hidden), nn.ConvTranspose2d(hidden, hidden, 4, 2, 1)]
    encoder = nn.Sequential(*down, nn.ReLU(), nn.Flatten(), nn.Linear(prod(feat), 2 * latent))
    decoder = nn.Sequential(
        *up, ResBlock(hidden), nn.ReLU(), nn.Conv2d(hidden, params_per_channel * c, 3, 1, 1)
    )
    return encoder, decoder


def build(arch: str, shape: Shape, latent: int, hidden: int, params_per_channel: int):
    return ARCHITECTURES[arch](shape, latent, hidden, params_per_channel)
