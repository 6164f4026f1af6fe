"""The model registry: stochastic layers -> model, and the one place that builds a model from
a Config. Apart from vae.py so that vae.py and hierarchical.py (which builds on vae.py's
pieces) do not import each other."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from vae_cli.model.hierarchical import TwoLayerVAE
from vae_cli.model.networks import Shape
from vae_cli.model.vae import VAE

if TYPE_CHECKING:  # a registry is a leaf: it takes a config, it never imports one
    from vae_cli.settings import Config


STOCHASTIC_LAYERS: dict[int, Callable[[Config, Shape], nn.Module]] = {
    1: VAE.from_config,
    2: TwoLayerVAE.from_config,
}


def build(cfg: Config, shape: Shape) -> nn.Module:
    return STOCHASTIC_LAYERS[cfg.stochastic_layers](cfg, shape)
