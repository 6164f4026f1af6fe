"""data/datamodule.py: each support's data transform, splits on the accelerator, and too
few eval batches for the processes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vae_cli.config import Config
from vae_cli.data import support
from vae_cli.data.batches import TensorBatches
from vae_cli.data.datamodule import VAEDataModule
from vae_cli.data.support import bits_offset
from vae_cli.errors import VaeError


def test_data_module_refuses_data_off_the_support(monkeypatch):
    """If the per-family transform ever produced the wrong values, setup says so."""
    monkeypatch.setattr(
        support, "to_unit_support", lambda x, support, binarize, generator=None: x.float() / 255
    )
    dm = VAEDataModule(Config(dataset="digits", likelihood="categorical"))
    expected = r'digits val split has values in .* outside the support of likelihood "categorical"'
    with pytest.raises(VaeError, match=expected + r" \(the integers 0\.\.255\)"):
        dm.setup("test")


def test_data_module_puts_each_support_on_its_support():
    for name in ("bernoulli", "gaussian", "categorical"):  # one family per support
        dm = VAEDataModule(Config(dataset="shapes32", likelihood=name))
        dm.setup("test")  # runs check_support on val and test
        assert dm.splits["test"].shape[1:] == (3, 32, 32)
    assert bits_offset("unit") == 8.0 and bits_offset("discrete") == 0.0


def test_splits_move_to_the_accelerator_once():
    dm = VAEDataModule(Config())
    dm.setup()
    dm.to_device(torch.device("cpu"))
    assert dm.splits["train"].device.type == "cpu"
    dm.to_device(torch.device("meta"))  # stands in for a GPU: any non-CPU device
    assert {t.device.type for t in dm.splits.values()} == {"meta"}
    batch = next(iter(TensorBatches(dm.splits["train"], 10, shuffle=True)))
    assert batch.device.type == "meta" and batch.shape == (10, 1, 8, 8)


def test_too_few_eval_batches_for_the_processes_is_a_clean_error():
    dm = VAEDataModule(Config(batch_size=100))
    dm.setup()
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    dm.trainer = SimpleNamespace(world_size=5, global_rank=0, current_epoch=0, strategy=cpu)
    with pytest.raises(VaeError, match=r"4 batches of 100 for 5 processes.*smaller --batch-size"):
        dm.test_dataloader()  # 360 examples: a fifth rank would wait forever in the all-reduce
    dm.trainer = SimpleNamespace(world_size=4, global_rank=3, current_epoch=0, strategy=cpu)
    assert len(dm.test_dataloader()) == 1
