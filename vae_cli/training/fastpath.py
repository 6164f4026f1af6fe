"""What keeps Lightning's per-step costs off the training hot path.

A small model on MNIST takes a few milliseconds per step; `self.log` of a few tensors every
step (ResultCollection bookkeeping, a host sync per value for the progress bar) and a
progress-bar redraw every step cost a large fraction of that. Here:

- `RunningMeans` keeps per-example values on the device and sums them 64 batches at a time,
  with the example count kept on the host, so a step launches no kernel for its metrics
  and never waits for the device; the means are
  read only when they are logged, every `log_every_n_steps` steps, and at the end of an epoch.
  Step means are written to the loggers directly rather than through `self.log`, whose
  registered metrics Lightning revisits on every step (measured: ~3% of a batch-100 step).
- `ThrottledRichProgressBar` redraws the training bar at most every `interval` seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import RichProgressBar
from torch import Tensor


class RunningMeans:
    """Exact means over examples of a few per-example quantities since the last `take()`."""

    # Batches are kept (detached, a few floats per example) and summed this many at a time:
    # a step then launches no kernel at all for its metrics.
    MAX_PENDING = 64

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.sums: Tensor | None = None
        self.count = 0  # examples, on the host: batch sizes are known without a sync
        self._pending: list[list[Tensor]] = []

    def update(self, values: dict[str, Tensor]) -> None:
        """Add a batch: each value has shape (B,), one entry per example."""
        self._pending.append([values[n].detach() for n in self.names])
        self.count += batch_size(values[self.names[0]])
        if len(self._pending) >= self.MAX_PENDING:
            self._reduce()

    def _reduce(self) -> None:
        if not self._pending:
            return
        batch = torch.stack([torch.cat(column).sum() for column in zip(*self._pending, strict=True)])
        self._pending = []
        self.sums = batch if self.sums is None else self.sums + batch

    def add(self, sums: Tensor, count: int) -> None:
        """Add sums taken from another accumulator of the same names."""
        self._reduce()
        self.sums = sums if self.sums is None else self.sums + sums
        self.count += count

    def take(self) -> tuple[Tensor, int] | None:
        """(sums, count) since the last take, and start afresh; None if nothing was added."""
        self._reduce()
        if self.sums is None:
            return None
        out = (self.sums, self.count)
        self.sums, self.count = None, 0
        return out

    def state_dict(self) -> dict[str, Any]:
        """For mid-epoch checkpoints (resume.EpochSums): the sums so far and the batches not yet
        summed, on the CPU. Not reduced here: float addition is not associative, and summing
        the pending batches at the save would group them differently from an uninterrupted
        run (which sums every MAX_PENDING batches), changing the last digits of the means."""
        return {
            "sums": None if self.sums is None else self.sums.detach().cpu(),
            "count": self.count,
            "pending": [[t.cpu() for t in batch] for batch in self._pending],
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        sums = state["sums"]
        self.sums = None if sums is None else sums.to(device)
        self.count = int(state["count"])
        self._pending = [[t.to(device) for t in batch] for batch in state.get("pending", [])]

    def means(self, sums: Tensor, count: int | Tensor) -> dict[str, Tensor]:
        means = sums / count
        return {n: means[i] for i, n in enumerate(self.names)}


def batch_size(x: Tensor) -> int:
    return int(x.shape[0])


def log_due(trainer: pl.Trainer, every_n_steps: int) -> bool:
    """True on the steps whose training means are written to the loggers.

    Called before the optimizer step: `global_step` then counts the steps already taken, and
    (as Lightning does for self.log) a log is due when (steps taken + 1) is a multiple of N.
    """
    return bool(trainer.fast_dev_run) or (trainer.global_step + 1) % every_n_steps == 0


class ThrottledRichProgressBar(RichProgressBar):
    """The RichProgressBar, updated during training at most every `interval` seconds and
    repainted by rich's background thread 10 times a second (Lightning's default is 100, a
    repaint of the whole bar each time, competing with training for the GIL).

    The last batch of an epoch always updates, so the bar ends on the true count.
    """

    def __init__(self, interval: float = 0.1, refresh_rate: int = 10, **kwargs) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.interval = interval
        self._last_draw = -float("inf")

    @property
    def total_train_batches(self) -> int | float:
        """Optimiser steps per epoch: a Lightning batch carries steps_per_call of them."""
        return getattr(self.trainer.train_dataloader, "steps", super().total_train_batches)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        steps = getattr(trainer.train_dataloader, "steps_per_item", 1)
        done = min((batch_idx + 1) * steps, self.total_train_batches)  # steps this epoch
        now = time.monotonic()
        if now - self._last_draw < self.interval and done != self.total_train_batches:
            return
        self._last_draw = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, int(done) - 1)

    def get_metrics(self, trainer, pl_module) -> dict:
        # The training means go to the loggers directly (see VAEModule.log_window), so the
        # bar shows them from the module.
        return {**super().get_metrics(trainer, pl_module), **getattr(pl_module, "bar_metrics", {})}


FUSED_DEVICES = ("cpu", "cuda")
FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fused_adam_ok(params: Sequence[Tensor], strategy: str) -> bool:
    """Adam's fused kernel: one pass over each parameter instead of about ten elementwise
    ops (measured: ~0.3 ms instead of ~0.7 ms per step for the MNIST MLP on 2 CPU cores).
    Same update rule; only where torch implements it, and not for FSDP's sharded params."""
    return strategy != "fsdp" and all(
        p.device.type in FUSED_DEVICES and p.dtype in FUSED_DTYPES for p in params
    )


NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


class NoNvmlProbePerStep(pl.Callback):
    """Lets torch.optim's per-step accelerator check use the cheap CUDA query on CPU runs.

    Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 (so that probing CUDA before
    workers are forked cannot poison the fork). Then, until CUDA is initialised, every
    Adam.step asks NVML for the device count, a dlopen of the NVML library each time:
    ~0.1-0.2 ms per step on a CPU machine, about 3% of a batch-100 MNIST step. A process
    without Lightning never pays it. Training on the CPU, the launcher has already started
    the workers by on_train_start, so the variable is lifted for the training loop only.
    """

    def __init__(self) -> None:
        self.saved: str | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cpu":
            self.saved = os.environ.pop(NVML_CHECK, None)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception) -> None:
        self.restore()

    def restore(self) -> None:
        if self.saved is not None:
            os.environ[NVML_CHECK] = self.saved
            self.saved = None
