"""The dataset registry: a name -> (shape, loader, default validation size). A leaf: it
imports no config and no other registry; the loaders register themselves in datasets.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from vae_cli.errors import unknown

SPLIT_SEED = 0  # the fixed seed of the train/val split

Splits = tuple[Tensor, Tensor]  # (train pool, test), uint8 (N, C, H, W); or ImageFiles (celeba.py)


@dataclass(frozen=True)
class DatasetSpec:
    shape: tuple[int, int, int]
    load: Callable[[Path], Splits]
    val_size: int
    about: str


DATASETS: dict[str, DatasetSpec] = {}


def register(name: str, shape: tuple[int, int, int], val_size: int, about: str):
    def add(fn: Callable[[Path], Splits]) -> Callable[[Path], Splits]:
        DATASETS[name] = DatasetSpec(shape, fn, val_size, about)
        return fn

    return add


def lookup(name: str) -> DatasetSpec:
    """The dataset registered as `name`; names are checked here, where the registry is used
    (datasets can be registered at run time, so the settings cannot list them all)."""
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS)
    return DATASETS[name]
