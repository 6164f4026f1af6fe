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

Float arrays (continuous data in [0, 1]) are kept as float32 and get no dequantisation
(support.continuous_support). Image folders too large for memory are streamed
(data/streaming.py): every batch then arrives as uint8 and is transformed here, training
batches with fresh noise, evaluation batches with noise seeded by their global batch index.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor

from vae_cli.config import Config
from vae_cli.data import checks
from vae_cli.data.batches import TensorBatches
from vae_cli.data.images import ImageFiles, drop_bad
from vae_cli.data.sources import Source, open_source
from vae_cli.data.streaming import StreamBatches
from vae_cli.data.support import DISCRETE_ON_FLOATS, EVAL_SEED, bits_offset, fixed_transform, to_unit_support
from vae_cli.errors import VaeError
from vae_cli.model.likelihoods import LIKELIHOODS, Support

ON_DEVICE_MAX_BYTES = 4 * 2**30  # splits up to this size live on the accelerator


class VAEDataModule(pl.LightningDataModule):
    def __init__(
        self, cfg: Config, eval_split: str = "test", say: Callable[[str], None] = lambda _: None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.say = say  # told what was inferred about user data (shape, skipped files, ...)
        self.support: Support = LIKELIHOODS[cfg.likelihood].support
        self.source: Source | None = None
        self.splits: dict[str, Tensor | ImageFiles] = {}
        self.labels: dict[str, Tensor | None] = {}  # class per example (plots only), if known
        self.eval_split = eval_split  # what test_dataloader serves: `vae eval --split val`

    @property
    def shape(self) -> tuple[int, int, int]:
        assert self.source is not None, "setup() first"
        return self.source.shape

    @property
    def dims(self) -> int:
        return math.prod(self.shape)

    @property
    def continuous(self) -> bool:
        return self.source is not None and self.source.continuous

    @property
    def bits_offset(self) -> float:
        return bits_offset(self.support, self.continuous)

    def info(self) -> dict[str, object]:
        """What the model must know about the data: its shape and whether it is continuous."""
        return {"shape": list(self.shape), "continuous": self.continuous}

    @property
    def normalised(self) -> bool:
        """False when Bernoulli scores non-binary data: then log_prob is no density."""
        return not (self.support == "binary" and self.cfg.binarize == "none")

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        source = open_source(self.cfg, self.say)
        if source.continuous and self.support == "discrete":
            raise VaeError(DISCRETE_ON_FLOATS)
        static = self.support == "binary" and self.cfg.binarize == "static"
        if source.streamed and static:
            raise VaeError("--binarize static binarises the training set once, in memory: use "
                           "--binarize dynamic, or --stream no if the data fits")  # fmt: skip
        self.source = source
        self.labels = {name: source.labels.get(name) for name in source.splits}  # None: no labels
        if source.streamed:
            self.splits = dict(source.splits)
            return
        train, val, test = (source.splits[k] for k in ("train", "val", "test"))
        fixed = lambda x, split: fixed_transform(x, split, self.support, self.cfg.binarize)  # noqa: E731
        self.splits = {
            # uint8 until the batch is on the device, unless binarised once for good
            "train": fixed(train, "train") if static else train,
            "val": fixed(val, "val"),
            "test": fixed(test, "test"),
        }
        for split in ("val", "test"):
            checks.check_support(self.splits[split], self.support, self.cfg.likelihood,
                                 f"the {self.cfg.dataset} {split} split", self.cfg.binarize)  # fmt: skip

    def examples(self, split: str, n: int) -> Tensor:
        """The first n examples of an evaluation split, on the likelihood's support."""
        data = self.splits[split]
        if isinstance(data, ImageFiles):  # streamed: decode just these, with the eval seed
            x = drop_bad([data[i] for i in range(min(n, len(data)))])
            return to_unit_support(
                x, self.support, self.cfg.binarize, torch.Generator().manual_seed(EVAL_SEED)
            )
        return data[:n]

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor | tuple[Tensor, ...]:
        """A training item becomes its mini-batches (see TensorBatches), each put on the
        support separately: the random draws then run on cache-sized tensors, measured
        5-10% faster than one draw over a whole item of 8 batches."""
        if isinstance(batch, tuple | list):  # a streamed eval batch and its global index
            x, index = batch
            g = torch.Generator(device=x.device).manual_seed(EVAL_SEED + int(index))
            return to_unit_support(x, self.support, self.cfg.binarize, g)
        if self.trainer is not None and self.trainer.training:
            return tuple(self._on_support(x) for x in batch.split(self.cfg.batch_size))
        return batch  # in-memory eval splits were put on the support once, in setup()

    def _on_support(self, batch: Tensor) -> Tensor:
        # Raw training batches: uint8, or floats (continuous data) unless binarised once.
        if batch.dtype == torch.uint8 or (self.continuous and self.cfg.binarize != "static"):
            return to_unit_support(batch, self.support, self.cfg.binarize)
        return batch

    def to_device(self, device: torch.device) -> None:
        """Hold the splits on the accelerator, once: batches are then slices of a device
        tensor, with no host->device copy per batch. MNIST-class data fits easily."""
        if any(isinstance(t, ImageFiles) for t in self.splits.values()):
            return  # streamed: each batch is copied when it is used
        size = sum(t.numel() * t.element_size() for t in self.splits.values())
        if device.type != "cpu" and size <= ON_DEVICE_MAX_BYTES:
            self.splits = {k: v.to(device) for k, v in self.splits.items()}

    def _batches(self, split: str, shuffle: bool) -> TensorBatches | StreamBatches:
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
        how = dict(
            seed=self.cfg.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=world,
            epoch_fn=lambda: trainer.current_epoch if trainer else 0,
            steps_per_item=self.cfg.steps_per_call,
        )
        data = self.splits[split]
        if isinstance(data, ImageFiles):
            return StreamBatches.over(data, self.cfg.num_workers, self.cfg.batch_size, shuffle, **how)
        return TensorBatches(data, self.cfg.batch_size, shuffle=shuffle, **how)

    def train_dataloader(self) -> TensorBatches | StreamBatches:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches | StreamBatches:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> TensorBatches | StreamBatches:
        return self._batches(self.eval_split, shuffle=False)
