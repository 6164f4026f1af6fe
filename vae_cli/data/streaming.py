"""Batches of image files decoded by DataLoader worker processes: the streaming path for
data too large to hold in memory.

The batches are the in-memory path's, index for index: a TensorBatches over the example
indices is the DataLoader's batch sampler, so the shuffle is the same pure function of
(seed, epoch), ranks get the same shards, a training item holds the same `steps_per_item`
mini-batches, and eval batches are dealt round-robin as before. The workers only decode;
binarisation and dequantisation happen per batch on the device (VAEDataModule).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from vae_cli.data.batches import TensorBatches, eval_batch_index
from vae_cli.data.images import ImageFiles, drop_bad


class StreamBatches:
    """Training: uint8 items of (steps_per_item * batch_size) images. Evaluation: pairs
    (uint8 batch, its global batch index), the index seeding the batch's fixed noise."""

    def __init__(self, data: ImageFiles, workers: int, index: TensorBatches) -> None:
        self.index = index  # over torch.arange(len(data)): it yields index batches
        self.steps_per_item = index.steps_per_item
        self.loader = DataLoader(
            data, batch_sampler=index, num_workers=workers, collate_fn=drop_bad,
            persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
        )  # fmt: skip
        self._position = (0, 0)

    @classmethod
    def over(cls, data: ImageFiles, workers: int, batch_size: int, shuffle: bool, **kwargs) -> StreamBatches:
        return cls(data, workers, TensorBatches(torch.arange(len(data)), batch_size, shuffle, **kwargs))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def steps(self) -> int:
        return self.index.steps

    def __iter__(self) -> Iterator[Tensor | tuple[Tensor, Tensor]]:
        idx = self.index
        if not idx.shuffle:
            for b, x in enumerate(self.loader):
                yield x, torch.tensor(eval_batch_index(b, idx.rank, idx.world_size))
            return
        # The sampler runs ahead of consumption (workers prefetch), so the position saved in a
        # checkpoint is counted here, at the consumer, not read from the sampler.
        epoch = idx.epoch_fn()
        skip = idx._resume[1] if idx._resume and idx._resume[0] == epoch else 0
        self._position = (epoch, skip)
        for i, x in enumerate(self.loader, start=skip + 1):
            self._position = (epoch, i)
            yield x

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._position[0], "batches": self._position[1]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.index.load_state_dict(state)
