"""Class labels of a split, where the data has them. Only the latent-space figures use them
(colour by class); training never sees a label.

One source: the data's own labels (image folders with class sub-folders, arrays saved with
labels: VAEDataModule.labels), else, for the test split, a built-in dataset's labels, read
in the same order as the test images its loader returns (TEST_LABELS below). Datasets with
neither have no labels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vae_cli.data import datasets

if TYPE_CHECKING:
    from vae_cli.data.datamodule import VAEDataModule

TEST_LABELS: dict[str, Callable[[Path], Tensor]] = {}


def _register(name: str) -> Callable[[Callable[[Path], Tensor]], Callable[[Path], Tensor]]:
    def add(fn: Callable[[Path], Tensor]) -> Callable[[Path], Tensor]:
        TEST_LABELS[name] = fn
        return fn

    return add


def split_labels(datamodule: VAEDataModule, split: str = "test") -> Tensor | None:
    """int64 (N,) class per example of a set-up data module's split, or None."""
    own = datamodule.labels.get(split)
    if own is not None:
        return own
    return test_labels(datamodule.cfg.dataset, Path(datamodule.cfg.data_dir)) if split == "test" else None


def test_labels(dataset: str, data_dir: Path) -> Tensor | None:
    """int64 (N,) labels of the test split, or None when the dataset has none."""
    load = TEST_LABELS.get(dataset)
    return load(Path(data_dir)) if load is not None else None


@_register("digits")
def _digits(data_dir: Path) -> Tensor:
    from sklearn.datasets import load_digits

    y = torch.from_numpy(load_digits().target)
    return y[datasets.digits_order(len(y))][: datasets.DIGITS_TEST]


def _torchvision_test(cls_name: str, folder: str, data_dir: Path) -> Tensor:
    """The .targets of torchvision's test split, opened as the image loader opens it (it
    unpacks the .gz files on first use; its one-line errors for missing files)."""
    _, test = datasets.open_torchvision(cls_name, folder, data_dir)
    return torch.as_tensor(test.targets).long()


@_register("mnist")
def _mnist(data_dir: Path) -> Tensor:
    return _torchvision_test("MNIST", "MNIST", data_dir)


@_register("fashion-mnist")
def _fashion_mnist(data_dir: Path) -> Tensor:
    return _torchvision_test("FashionMNIST", "FashionMNIST", data_dir)
