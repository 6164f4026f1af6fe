"""Preflight checks: bad input becomes a VaeError before any work starts or any file is written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vae_cli.errors import VaeError


def ensure_writable(folder: Path, what: str) -> None:
    """Create `folder` if needed and prove a file can be written there."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".vae-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise VaeError(f"cannot write to {folder} ({reason}): pass {what} a writable folder") from None


def check_devices(cfg: Any) -> None:
    """CPU "devices" are processes: Lightning would start any number of them, so cap at the cores.

    GPU counts are checked by Lightning itself (MisconfigurationException, translated by
    errors.translate).
    """
    on_cpu = cfg.accelerator == "cpu" or (cfg.accelerator == "auto" and not torch.cuda.is_available())
    cores = os.cpu_count() or 1
    if on_cpu and cfg.devices > cores:
        raise VaeError(
            f"--devices {cfg.devices} but this machine has {cores} CPU cores: pass --devices {cores} "
            f"or fewer (-1: all)"
        )


def check_compatible(trained: Any, requested: dict[str, Any]) -> None:
    """A checkpoint's decoder is tied to its likelihood and its data shape; say so, don't crash."""
    from vae_cli.data import DATASETS

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
