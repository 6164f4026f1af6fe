"""Loading a run: the one path from a checkpoint to its module, config and data.

`vae eval`, `vae reconstruct` and `vae compare` all start here, so a checkpoint is always
paired with the data it was trained on in the same way (splits, binarisation, dequantisation).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_cli import runs
from vae_cli.config import Config
from vae_cli.data.datamodule import VAEDataModule
from vae_cli.errors import VaeError
from vae_cli.training.checkpointing import check_same_model, read_checkpoint
from vae_cli.training.module import VAEModule


@dataclass(frozen=True)
class LoadedRun:
    """A trained module with the config and the (set up) data it is scored on."""

    ckpt: Path
    module: VAEModule
    cfg: Config  # the run's config with the caller's overrides (data_dir, trainer settings)
    datamodule: VAEDataModule


def load_run(
    ckpt: Path, overrides: dict[str, Any] | None = None, split: str = "test", run_dir: Path | None = None
) -> LoadedRun:
    """Load a checkpoint (checked against `run_dir`'s config.yaml when given) and build its
    evaluation data; `split` is what the test loop serves."""
    module = load_module(ckpt, run_dir)
    cfg, datamodule = datamodule_for(module, overrides, split)
    return LoadedRun(Path(ckpt), module, cfg, datamodule)


def datamodule_for(
    module: VAEModule, overrides: dict[str, Any] | None = None, split: str = "test"
) -> tuple[Config, VAEDataModule]:
    """The run's data (test and val splits set up), with `overrides` applied to its config.

    Overrides that would change what the decoder models (likelihood, a dataset of another
    shape) are refused with a clear error."""
    check_compatible(module.cfg, overrides or {})
    cfg = dataclasses.replace(module.cfg, **(overrides or {})).validate()
    datamodule = VAEDataModule(cfg, eval_split=split)
    datamodule.setup("test")
    check_data(module, datamodule)
    return cfg, datamodule


def load_module(ckpt: Path, run_dir: Path | None = None) -> VAEModule:
    """The module of a checkpoint, built from its saved config and weights. Never through
    pickle (read_checkpoint: weights_only=True), so a checkpoint cannot run code. If the
    checkpoint sits in a run directory (`run_dir`, by default the one its path names), it
    must match the run's config.yaml: every reader (eval, sample, reconstruct, latent, the
    Python API, sweeps) comes through here, so none can use a checkpoint copied from
    another model."""
    ckpt = Path(ckpt)
    checkpoint = read_checkpoint(ckpt)
    check_same_model(checkpoint, Path(run_dir) if run_dir is not None else runs.run_dir_of(ckpt), ckpt)
    try:
        hparams = checkpoint["hyper_parameters"]
        module = VAEModule(hparams["config"], data=hparams.get("data"))
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
    from vae_cli.data.registry import DATASETS, lookup

    likelihood = requested.get("likelihood")
    if likelihood is not None and likelihood != trained.likelihood:
        raise VaeError(
            f'the checkpoint was trained with likelihood "{trained.likelihood}", not "{likelihood}": '
            f"drop --likelihood, or evaluate a run trained with {likelihood}"
        )
    dataset = requested.get("dataset")
    if dataset is not None and dataset != trained.dataset and {dataset, trained.dataset} <= set(DATASETS):
        # user data (a path) has no registered shape: check_data compares it once it is read
        have, want = lookup(trained.dataset).shape, lookup(dataset).shape
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
