"""Randomness that is exact across world sizes and reproducible within one.

Two rules (docs/scaling.md):
- Evaluation noise (the z draws of the ELBO and the IW bound) is a function of
  (seed, global batch index) only, so a checkpoint scores the same on 1 or 8 devices.
- Training noise (dynamic binarisation, z draws) must differ between ranks, or every rank
  would repeat the same draws on its shard: it is seeded from (seed, rank, epoch).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytorch_lightning as pl
import torch


def mix_seed(*parts: int) -> int:
    """One 64-bit seed from several integers, well mixed (numpy's SeedSequence hash)."""
    return int(np.random.SeedSequence([p % 2**64 for p in parts]).generate_state(1, np.uint64)[0])


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block on its own seed and give the surrounding RNG state back afterwards,
    so evaluation never shifts the training stream."""
    devices = [device.index if device.index is not None else 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.manual_seed(seed)
        yield


def eval_noise(seed: int, batch_index: int, device: torch.device, stream: int = 0):
    """The RNG context of global eval batch `batch_index`: independent of the world size.
    Streams keep one statistic's draws from shifting another's: 0 is the ELBO and IW
    bound, 1 the active-unit statistics (so --iw-samples cannot move them)."""
    return seeded(mix_seed(seed, 0xE7A1 + stream, batch_index), device)


class RankSeed(pl.Callback):
    """Reseeds torch at each training epoch from (seed, global rank, epoch).

    After DDP set-up Lightning reseeds every rank with the same global seed; without this
    all ranks would draw identical binarisation and z noise. Seeding per epoch (not once)
    keeps a run resumed at an epoch boundary on the same stream.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.manual_seed(mix_seed(self.seed, trainer.global_rank, trainer.current_epoch))
