"""Datasets and the Lightning data module.

Every dataset is held as one uint8 tensor (N, C, H, W) with values 0..255 per split, and
batches are slices of it by a shuffled index: no per-sample Python work. What the model
sees depends on the likelihood's support and is produced per batch, on the device:

    binary   -> Bernoulli(x/255) draws: fresh per training batch ("dynamic", the IWAE
                protocol), or once with a fixed seed ("static"); "none" passes x/255 through
    unit     -> (x + u)/256, u ~ U[0,1): uniform dequantisation, fresh per training batch
    discrete -> the integer values 0..255 (as float)

Validation and test splits are transformed once, each with its own fixed seed (see
support.fixed_transform): every evaluation of a checkpoint, and of every run on the same dataset
and support, scores exactly the same data, whatever --binarize, --val-size or the family.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor

from vae_cli.config import Config
from vae_cli.data import checks
from vae_cli.data.batches import TensorBatches
from vae_cli.data.registry import lookup
from vae_cli.data.support import bits_offset, fixed_transform, to_unit_support
from vae_cli.errors import VaeError
from vae_cli.model.likelihoods import LIKELIHOODS, Support

ON_DEVICE_MAX_BYTES = 4 * 2**30  # splits up to this size live on the accelerator


class VAEDataModule(pl.LightningDataModule):
    def __init__(self, cfg: Config, eval_split: str = "test") -> None:
        super().__init__()
        self.cfg = cfg
        self.spec = lookup(cfg.dataset)
        self.support: Support = LIKELIHOODS[cfg.likelihood].support
        self.shape = self.spec.shape
        self.dims = math.prod(self.shape)
        self.bits_offset = bits_offset(self.support)
        self.splits: dict[str, Tensor] = {}
        self.eval_split = eval_split  # what test_dataloader serves: `vae eval --split val`

    @property
    def normalised(self) -> bool:
        """False when Bernoulli scores non-binary data: then log_prob is no density."""
        return not (self.support == "binary" and self.cfg.binarize == "none")

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        pool, test = self.spec.load(Path(self.cfg.data_dir))
        for x in (pool, test):
            checks.check_raw(self.cfg.dataset, x, self.shape, self.cfg.likelihood, self.support)
        val_size = self.cfg.val_size or self.spec.val_size
        if val_size >= len(pool):
            raise VaeError(f"val_size {val_size} leaves no training data ({len(pool)} examples)")
        train, val = pool[:-val_size], pool[-val_size:]
        fixed = lambda x, split: fixed_transform(x, split, self.support, self.cfg.binarize)  # noqa: E731
        static = self.support == "binary" and self.cfg.binarize == "static"
        self.splits = {
            # uint8 until the batch is on the device, unless binarised once for good
            "train": fixed(train, "train") if static else train,
            "val": fixed(val, "val"),
            "test": fixed(test, "test"),
        }
        for split in ("val", "test"):
            checks.check_support(self.splits[split], self.support, self.cfg.likelihood,
                                 f"the {self.cfg.dataset} {split} split", self.cfg.binarize)  # fmt: skip

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor | tuple[Tensor, ...]:
        """A training item becomes its mini-batches (see TensorBatches), each put on the
        support separately: the random draws then run on cache-sized tensors, measured
        5-10% faster than one draw over a whole item of 8 batches."""
        if self.trainer is not None and self.trainer.training:
            return tuple(self._on_support(x) for x in batch.split(self.cfg.batch_size))
        return self._on_support(batch)

    def _on_support(self, batch: Tensor) -> Tensor:
        if batch.dtype == torch.uint8:  # only the dynamic training split arrives as raw uint8
            return to_unit_support(batch, self.support, self.cfg.binarize)
        return batch

    def to_device(self, device: torch.device) -> None:
        """Hold the splits on the accelerator, once: batches are then slices of a device
        tensor, with no host->device copy per batch. MNIST-class data fits easily."""
        size = sum(t.numel() * t.element_size() for t in self.splits.values())
        if device.type != "cpu" and size <= ON_DEVICE_MAX_BYTES:
            self.splits = {k: v.to(device) for k, v in self.splits.items()}

    def _batches(self, split: str, shuffle: bool) -> TensorBatches:
        trainer = self.trainer
        if trainer is not None:
            self.to_device(trainer.strategy.root_device)
        world = trainer.world_size if trainer else 1
        n_batches = math.ceil(len(self.splits[split]) / self.cfg.batch_size)
        if not shuffle and n_batches < world:
            # a rank without a batch would skip the metric all-reduce the others wait in
            raise VaeError(
                f"the {split} split makes {n_batches} batches of {self.cfg.batch_size} for "
                f"{world} processes: each needs at least one, pass a smaller --batch-size"
            )
        return TensorBatches(
            self.splits[split],
            self.cfg.batch_size,
            shuffle=shuffle,
            seed=self.cfg.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=world,
            epoch_fn=lambda: trainer.current_epoch if trainer else 0,
            steps_per_item=self.cfg.steps_per_call,
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches(self.eval_split, shuffle=False)
