"""Numerical faults: a non-finite loss or gradient never reaches the weights or a checkpoint.

`nonfinite: stop` (default) ends training with an error naming the step; the checkpoints on
disk are the last good ones, because nothing is saved after the fault (and
`resume.AtomicCheckpointIO` refuses non-finite weights anyway). `nonfinite: skip` drops the
update instead, as vdvae does; `skip_grad_norm: G > 0` also drops updates whose gradient
norm exceeds G (vdvae's `skip_threshold`), which catches the spikes that precede a NaN.

The check runs inside the optimiser closure (on_before_optimizer_step), after backward and
before the update; clearing every .grad makes torch.optim skip the step (and leaves
Adam's moments and step count untouched), which is exactly "this batch never happened".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from vae_cli.errors import VaeError

MODES = ("stop", "skip")


class NonFiniteError(VaeError):
    """Training stopped on a NaN/inf loss or gradient."""


def grad_norm(params: list[Tensor]) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


class NonFiniteGuard(Callback):
    def __init__(
        self, mode: str = "stop", skip_grad_norm: float = 0.0, checkpoint_dir: Path | None = None
    ) -> None:
        if mode not in MODES:
            raise ValueError(mode)
        self.mode, self.skip_grad_norm, self.checkpoint_dir = mode, skip_grad_norm, checkpoint_dir
        self.skipped = 0
        self._loss: Tensor | None = None

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        norm = grad_norm(params)
        loss = self._loss if self._loss is not None else torch.zeros(())
        # one host sync for both checks
        loss_ok, norm_ok = (bool(v) for v in torch.stack([loss.isfinite(), norm.isfinite()]).tolist())
        too_big = self.skip_grad_norm > 0 and norm_ok and float(norm) > self.skip_grad_norm
        if loss_ok and norm_ok and not too_big:
            return
        if self.mode == "skip" or (too_big and loss_ok and norm_ok):
            for p in params:
                p.grad = None
            self.skipped += 1
            return
        what = f"loss ({float(loss)})" if not loss_ok else f"gradient (norm {float(norm)})"
        raise NonFiniteError(
            f"non-finite {what} at step {trainer.global_step} (epoch {trainer.current_epoch}): "
            f"training stopped before the update; {self._kept()}. Lower --lr, or pass "
            f"--nonfinite skip to skip such updates"
        )

    def _kept(self) -> str:
        last = self.checkpoint_dir / "last.ckpt" if self.checkpoint_dir else None
        if last is not None and last.is_file():
            return f"the last good checkpoint {last} is kept"
        return "no checkpoint had been written yet"

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
