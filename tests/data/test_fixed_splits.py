"""The one-time transform of the evaluation splits is a function of (dataset, split) alone.

Each split is binarised / dequantised with its own documented seed (vae_cli.data.support.fixed_seed),
so the test set a run scores cannot move with --binarize, --val-size or the family, and
eval.json's data_protocol is enough to regenerate it by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vae_cli.config import Config
from vae_cli.data.datamodule import VAEDataModule
from vae_cli.data.registry import DATASETS
from vae_cli.model.likelihoods import LIKELIHOODS
from vae_cli.training.evaluate import protocol

VAL_SIZES = (None, 100, 300)


def split(split_name: str, **settings) -> torch.Tensor:
    dm = VAEDataModule(Config(dataset="digits", **settings))
    dm.setup("test")
    return dm.splits[split_name]


@pytest.mark.parametrize("support", ["binary", "unit", "discrete"])
def test_test_split_is_the_same_for_every_setting_that_shares_a_support(support: str):
    families = [name for name, cls in LIKELIHOODS.items() if cls.support == support]
    binarize = ("dynamic", "static") if support == "binary" else ("dynamic",)
    first = split("test", likelihood=families[0])
    for name in families:
        for b in binarize:
            for v in VAL_SIZES:
                got = split("test", likelihood=name, binarize=b, val_size=v)
                assert torch.equal(got, first), (name, b, v)
    # a given val split, too, is the same whatever the binarisation of the training split
    if support == "binary":
        assert torch.equal(split("val", binarize="static"), split("val", binarize="dynamic"))


def regenerate(x: torch.Tensor, seed: int, support: str) -> torch.Tensor:
    """The rule written in data_protocol, redone from the raw uint8 images by hand."""
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    k = x.double()
    if support == "binary":
        return (255 * u.double() < k).float()
    return ((k + u.double()) / 256).float()


@pytest.mark.parametrize(("likelihood", "support"), [("bernoulli", "binary"), ("gaussian", "unit")])
@pytest.mark.parametrize("val_size", VAL_SIZES)
def test_data_protocol_is_enough_to_regenerate_the_split(likelihood: str, support: str, val_size):
    pool, test = DATASETS["digits"].load(Path("."))
    val = pool[-(val_size or DATASETS["digits"].val_size) :]
    cfg = Config(dataset="digits", likelihood=likelihood, val_size=val_size)
    dm = VAEDataModule(cfg)
    dm.setup("test")
    for name, raw, seed in (("test", test, 1234), ("val", val, 1235)):
        dm.eval_split = name
        sentence = protocol(cfg, dm)
        assert f"manual_seed({seed})" in sentence and f"the {name} split" in sentence
        assert ("1[255 u < k]" if support == "binary" else "(k + u)/256") in sentence
        assert torch.equal(dm.splits[name], regenerate(raw, seed, support)), name


def test_static_training_split_has_its_own_seed():
    pool, _ = DATASETS["digits"].load(Path("."))
    train = pool[: -DATASETS["digits"].val_size]
    got = split("train", binarize="static")
    assert torch.equal(got, regenerate(train, 1236, "binary"))
