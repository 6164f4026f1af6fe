"""vae-cli: a command-line experiment runner for variational autoencoders.

The Python API (docs/python.md) is imported on first use, so `import vae_cli` (and the
CLI's start-up) does not import torch:

    vae_cli.load(path) -> vae_cli.api.Model    a trained run, from its directory or a .ckpt
    vae_cli.train(config) -> Path               train as `vae train` does; the run directory
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Model", "load", "train"]

if TYPE_CHECKING:
    from vae_cli.api import Model, load, train


def __getattr__(name: str) -> Any:
    # PEP 562: `vae_cli.load` imports vae_cli.api (and torch) only when first looked up.
    if name in __all__:
        from vae_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'vae_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    # tab completion (IPython, Jupyter) lists the lazily imported API too
    return sorted({*globals(), *__all__})
