"""Loading a checkpoint written by `vae train`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_cli.errors import VaeError
from vae_cli.train.module import VAEModule


def load_module(ckpt: Path) -> VAEModule:
    if not Path(ckpt).is_file():
        raise VaeError(f"checkpoint {ckpt} does not exist: pass a run directory or a .ckpt file")
    try:
        module = VAEModule.load_from_checkpoint(str(ckpt), map_location="cpu")
    except VaeError:
        raise
    except Exception as e:
        raise VaeError(
            f"{ckpt} is not a readable vae-cli checkpoint ({type(e).__name__}): "
            f"pass a checkpoint written by `vae train`"
        ) from None
    return module.eval()


def check_compatible(trained: Any, requested: dict[str, Any]) -> None:
    """A checkpoint's decoder is tied to its likelihood and its data shape; say so, don't crash."""
    from vae_cli.data.registry import DATASETS

    likelihood = requested.get("likelihood")
    if likelihood is not None and likelihood != trained.likelihood:
        raise VaeError(
            f'the checkpoint was trained with likelihood "{trained.likelihood}", not "{likelihood}": '
            f"drop --likelihood, or evaluate a run trained with {likelihood}"
        )
    dataset = requested.get("dataset")
    if dataset is not None and dataset != trained.dataset and {dataset, trained.dataset} <= set(DATASETS):
        # user data (a path) has no registered shape: check_data compares it once it is read
        have, want = DATASETS[trained.dataset].shape, DATASETS[dataset].shape
        if have != want:
            raise VaeError(
                f"the checkpoint models {_shape(have)} images ({trained.dataset}) but {dataset} has "
                f"{_shape(want)}: pass a dataset of the same shape"
            )


def check_data(module: VAEModule, datamodule: Any) -> None:
    """The data read now has the shape (and kind) the checkpoint's model was trained on."""
    if tuple(datamodule.shape) != tuple(module.shape) or datamodule.continuous != module.continuous:
        kind = lambda c: "float" if c else "8-bit"  # noqa: E731
        raise VaeError(
            f"the checkpoint models {kind(module.continuous)} {_shape(module.shape)} images but "
            f"{datamodule.cfg.dataset} now gives {kind(datamodule.continuous)} {_shape(datamodule.shape)}: "
            f"pass the run's data (or --image-size/--channels as at training)"
        )


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
