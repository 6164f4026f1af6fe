"""data/labels.py: one source of class labels for the latent figures, the data's own
(VAEDataModule.labels) before a built-in dataset's test labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vae_cli.config import Config
from vae_cli.data import labels as dataset_labels
from vae_cli.data.datamodule import VAEDataModule
from vae_cli.data.registry import DATASETS


def datamodule(**kw) -> VAEDataModule:
    dm = VAEDataModule(Config(**kw).validate())
    dm.setup()
    return dm


def test_digits_labels_belong_to_their_test_images() -> None:
    from sklearn.datasets import load_digits

    sk = load_digits()
    _, test = DATASETS["digits"].load(Path("."))
    labels = dataset_labels.test_labels("digits", Path("."))
    assert labels is not None and len(labels) == len(test) == 360
    images = torch.from_numpy(sk.images).mul(255 / 16).round().to(torch.uint8)
    for i in range(0, 360, 37):  # find each test image among sklearn's and compare the targets
        matches = (images == test[i, 0]).flatten(1).all(1).nonzero().flatten()
        assert len(matches) >= 1
        assert {int(sk.target[m]) for m in matches} == {int(labels[i])}
    assert dataset_labels.test_labels("shapes32", Path(".")) is None


def test_split_labels_prefer_the_datas_own(tmp_path: Path) -> None:
    """Image i is filled with the value i and labelled i % 7: whatever the split rule, every
    test example's label must be its own value mod 7."""
    x = np.repeat(np.arange(200, dtype=np.uint8), 16).reshape(200, 4, 4)
    np.savez(tmp_path / "own.npz", x=x, labels=np.arange(200) % 7)
    dm = datamodule(dataset=str(tmp_path / "own.npz"), likelihood="categorical")
    test = dm.examples("test", 200)
    labels = dataset_labels.split_labels(dm, "test")
    assert labels is not None and len(labels) == len(test) > 0
    assert torch.equal(labels, test[:, 0, 0, 0].long() % 7)


def test_split_labels_fall_back_to_a_built_in_dataset() -> None:
    from sklearn.datasets import load_digits

    dm = datamodule(dataset="digits")
    assert dm.labels.get("test") is None  # built-in data carries no labels of its own
    labels = dataset_labels.split_labels(dm, "test")
    assert labels is not None and len(labels) == len(dm.splits["test"])
    assert set(labels.tolist()) == set(load_digits().target.tolist())
    assert dataset_labels.split_labels(dm, "val") is None  # built-in labels: the test split only


def test_no_labels_without_a_source(tmp_path: Path) -> None:
    np.save(tmp_path / "plain.npy", np.zeros((60, 4, 4), np.uint8))
    assert dataset_labels.split_labels(datamodule(dataset=str(tmp_path / "plain.npy")), "test") is None
