"""The Lightning internals vae-cli relies on (vae_cli/training/lightning_private.py) still exist.

If one of these fails after a Lightning upgrade, the message names the attribute: fix
lightning_private.py (and only it), then docs/performance.md."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from vae_cli.training import lightning_private


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(2, 1)
        self.seen: list[tuple[int, int]] = []

    def training_step(self, batch, batch_idx):
        return self.net(batch).pow(2).mean()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.seen.append((batch_idx, lightning_private.batches_done_this_epoch(self.trainer)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Scored(Tiny):
    def validation_step(self, batch, batch_idx) -> None:
        self.log("score", -self.net(batch).pow(2).mean())


class ThreeStepsPerBatch(Tiny):
    """Manual optimisation, several optimiser steps per batch, as VAEModule does."""

    def __init__(self, align: bool) -> None:
        super().__init__()
        self.automatic_optimization, self.align = False, align

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        for x in batch.chunk(3):
            opt.zero_grad()
            self.manual_backward(self.net(x).pow(2).mean())
            opt.step()
        if self.align:
            lightning_private.align_logger_step(self.trainer)


class EpochLogged:
    def on_train_epoch_end(self) -> None:
        self.log("m", 1.0)


def trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    settings = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    return pl.Trainer(**{**settings, **kwargs})


def test_the_private_loop_attributes_exist(tmp_path: Path):
    t = trainer(tmp_path, max_epochs=1)
    loop = t.fit_loop.epoch_loop
    for owner, name in ((loop, "_batches_that_stepped"), (loop, "batch_progress")):
        assert hasattr(owner, name), (
            f"Lightning {pl.__version__} no longer has fit_loop.epoch_loop.{name}: "
            f"update vae_cli/training/lightning_private.py"
        )


def test_batch_progress_counts_the_batches_of_this_epoch(tmp_path: Path):
    module = Tiny()
    trainer(tmp_path, max_epochs=2).fit(module, torch.utils.data.DataLoader(torch.randn(6, 2), batch_size=2))
    # after batch i's hooks ran: i + 1 batches processed, counted afresh each epoch
    assert module.seen == [(0, 1), (1, 2), (2, 3)] * 2, (
        "fit_loop.epoch_loop.batch_progress.current.processed no longer counts this epoch's "
        "batches at on_train_batch_end: update lightning_private.batches_done_this_epoch"
    )


def epoch_row_steps(module: pl.LightningModule, batch: int, tmp_path: Path) -> list[int]:
    from pytorch_lightning.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name=type(module).__name__, version=0)
    loader = torch.utils.data.DataLoader(torch.randn(12, 2), batch_size=batch)
    trainer(tmp_path, max_epochs=2, logger=logger).fit(module, loader)
    rows = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()[1:]
    return [int(row.split(",")[-1]) for row in rows]  # columns: epoch, m, step


@pytest.mark.slow
def test_align_logger_step_puts_epoch_logs_on_the_optimiser_step(tmp_path: Path):
    """3 steps per batch of 6, aligned, log at the steps of 1 step per batch of 2."""
    one = type("One", (EpochLogged, Tiny), {})()
    three = type("Three", (EpochLogged, ThreeStepsPerBatch), {})(align=True)
    unaligned = type("Unaligned", (EpochLogged, ThreeStepsPerBatch), {})(align=False)
    reference = epoch_row_steps(one, 2, tmp_path)
    assert epoch_row_steps(three, 6, tmp_path) == reference, (
        "Lightning no longer logs at fit_loop.epoch_loop._batches_that_stepped: update "
        "lightning_private.align_logger_step"
    )
    assert epoch_row_steps(unaligned, 6, tmp_path) != reference  # the alignment is what did it


def test_ddp_spawn_is_recognised_and_ddp_is_not(tmp_path: Path):
    spawn = trainer(tmp_path, strategy="ddp_spawn", devices=2)
    assert lightning_private.ran_in_worker_processes(spawn), (
        "the ddp_spawn launcher is no longer _MultiProcessingLauncher: update "
        "lightning_private.ran_in_worker_processes"
    )
    assert not lightning_private.ran_in_worker_processes(trainer(tmp_path))


@pytest.mark.slow
def test_checkpoint_counts_read_a_written_checkpoint(tmp_path: Path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    module = Scored()
    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="score", mode="max", save_last=True)
    loader = torch.utils.data.DataLoader(torch.randn(6, 2), batch_size=2)
    t = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, max_epochs=2, callbacks=[ckpt])  # fmt: skip
    t.fit(module, loader, loader)
    epochs, step, best = lightning_private.checkpoint_counts(tmp_path / "last.ckpt")
    # the same numbers the in-process trainer and its callback hold
    assert (epochs, step) == (t.current_epoch, t.global_step) == (2, 6)
    assert best == float(ckpt.best_model_score)
