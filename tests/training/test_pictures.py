"""training/pictures.py: sample and reconstruction grids reach TensorBoard at each validation."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_training_sends_grids_to_tensorboard(tiny_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tiny_run), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"samples/mean", "samples/stochastic", "reconstructions"}
    steps = [e.step for e in events.Images("samples/mean")]
    assert len(steps) == 3 and steps == sorted(steps) and steps[0] > 0  # one per validation (epoch)
    assert events.Images("samples/mean")[0].width >= 400
