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
from typing import Any

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


class ToMainProcess(pl.Callback):
    """Carries fit counts and VAEModule.test_results back to the process that called
    trainer.fit/test.

    ddp_spawn runs the loops in worker processes and returns to the caller only the
    weights, the best checkpoint's path and trainer.callback_metrics: the numbers ride
    there as float64 tensors (the same path is used without spawn, so there is one code path).
    """

    PREFIX = "vae_cli/"

    def _put(self, trainer: pl.Trainer, group: str, values: dict[str, Any]) -> None:
        # numbers and lists of numbers (e.g. active units per layer) both ride as tensors
        trainer.callback_metrics.update(
            {f"{self.PREFIX}{group}/{k}": torch.tensor(v, dtype=torch.float64) for k, v in values.items()}
        )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        values = {"epoch": trainer.current_epoch, "global_step": trainer.global_step}
        best = getattr(trainer.checkpoint_callback, "best_model_score", None)
        if best is not None:
            values["best_model_score"] = float(best)
        self._put(trainer, "fit", values)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._put(trainer, "test", getattr(pl_module, "test_results", {}))

    @classmethod
    def get(cls, trainer: pl.Trainer, group: str) -> dict[str, Any]:
        prefix = f"{cls.PREFIX}{group}/"
        return {
            k.removeprefix(prefix): v.item() if v.ndim == 0 else v.tolist()
            for k, v in trainer.callback_metrics.items()
            if k.startswith(prefix)
        }
