"""training/schedules.py: the IWAE paper's schedule; epoch schedules are stepped and survive a resume."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import pytorch_lightning as pl
from conftest import cpu, digits_module, small_run

from vae_cli.training import fit as training
from vae_cli.training import schedules

# ---------------------------------------------------------------- several steps per Lightning batch


class LearningRates(pl.Callback):
    """(epoch, lr) of every optimiser step, read just before the update."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        self.seen.append((trainer.current_epoch, optimizer.param_groups[0]["lr"]))


@pytest.mark.slow
def test_epoch_schedule_is_stepped_and_survives_a_resume(tmp_path: Path):
    """Manual optimisation leaves the scheduler to the module: the IWAE schedule's rate must be
    lr * 10^(-i/7) in every epoch of stage i (epoch 0: i=0; 1-3: i=1; 4: i=2), also after a
    resume at an epoch boundary."""
    cfg = small_run(tmp_path, "sched", schedule="iwae", epochs=2)
    first = LearningRates()
    run_dir = training.fit(cfg, callbacks=[first], run=cpu(tmp_path))
    resumed = LearningRates()
    training.fit(dataclasses.replace(cfg, epochs=5), resume=run_dir, callbacks=[resumed], run=cpu(tmp_path))
    seen = first.seen + resumed.seen
    assert sorted({e for e, _ in seen}) == [0, 1, 2, 3, 4]
    for epoch, lr in seen:
        assert lr == pytest.approx(cfg.lr * schedules.iwae_lr_factor(epoch), rel=1e-9), epoch
    assert schedules.iwae_lr_factor(4) < schedules.iwae_lr_factor(1) < 1.0  # three stages seen


def test_paper_schedule_has_3_to_the_i_epochs_per_stage() -> None:
    stages = Counter(schedules.iwae_stage(e) for e in range(3280))
    assert stages == {i: 3**i for i in range(8)}
    assert schedules.iwae_stage(10_000) == 7  # after the schedule: the last rate continues
    assert schedules.iwae_lr_factor(0) == 1.0
    assert schedules.iwae_lr_factor(3279) == pytest.approx(0.1)
    opt = digits_module(schedule="iwae").configure_optimizers()["optimizer"]
    assert opt.defaults["eps"] == 1e-4
