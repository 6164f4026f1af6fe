"""Loading a checkpoint written by `vae train`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_cli.errors import VaeError
from vae_cli.train.checkpointing import check_same_model, read_checkpoint
from vae_cli.train.module import VAEModule


def load_module(ckpt: Path, run_dir: Path | None = None) -> VAEModule:
    """The module of a checkpoint, built from its saved config and weights. Never through
    pickle (read_checkpoint: weights_only=True), so a checkpoint cannot run code; if the
    checkpoint sits in a run directory, it must match the run's config.yaml."""
    checkpoint = read_checkpoint(Path(ckpt))
    if run_dir is not None:
        check_same_model(checkpoint, Path(run_dir), Path(ckpt))
    try:
        module = VAEModule(checkpoint["hyper_parameters"]["config"])
        module.load_state_dict(checkpoint["state_dict"])
        module.on_load_checkpoint(checkpoint)
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
    if dataset is not None and dataset != trained.dataset:
        have, want = DATASETS[trained.dataset].shape, DATASETS[dataset].shape
        if have != want:
            raise VaeError(
                f"the checkpoint models {_shape(have)} images ({trained.dataset}) but {dataset} has "
                f"{_shape(want)}: pass a dataset of the same shape"
            )


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
