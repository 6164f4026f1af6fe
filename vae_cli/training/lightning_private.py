"""Every use of Lightning internals in vae-cli, in one place.

The fast path takes several optimiser steps per Lightning batch (data.TensorBatches,
VAEModule.training_step), and eval/fit must work under ddp_spawn. Lightning has no public
API for the few things below; each is a one-liner here so that a Lightning upgrade breaks
one module, and tests/training/test_lightning_private.py says loudly which attribute moved.
Everything else (callbacks, loggers, progress-bar properties, the optimizer wrapper,
manual_backward, lr_scheduler_configs) is public API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher


def batches_done_this_epoch(trainer: pl.Trainer) -> int:
    """Lightning batches processed so far in the current training epoch (the loop's progress
    counter; restored from checkpoints, so right after a mid-epoch resume too)."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def align_logger_step(trainer: pl.Trainer) -> None:
    """Lightning writes self.log'd values (val/*, train/*_epoch) at the step
    `fit_loop.epoch_loop._batches_that_stepped`, which it advances by one per training batch.
    With several optimiser steps per batch that counter falls behind global_step; set it to
    what one step per batch gives (Lightning adds the 1 after this batch's hooks), so every
    row of metrics.csv and TensorBoard shares one step axis. No public setter exists."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step - 1


def ran_in_worker_processes(trainer: pl.Trainer) -> bool:
    """True when trainer.fit/test ran in spawned workers (ddp_spawn): the calling process's
    trainer then has the callback metrics and the best checkpoint's path, but not the loop
    counters."""
    return isinstance(trainer.strategy.launcher, _MultiProcessingLauncher)


def checkpoint_counts(path: Path) -> tuple[int, int, float | None]:
    """(epochs started, global step, best monitored score) stored in a Lightning checkpoint."""
    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    best = None
    for key, state in ckpt.get("callbacks", {}).items():
        if str(key).startswith("ModelCheckpoint") and state.get("best_model_score") is not None:
            best = float(state["best_model_score"])
    return int(ckpt["epoch"]) + 1, int(ckpt["global_step"]), best
