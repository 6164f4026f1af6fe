"""training/load.py: every reader of a checkpoint comes through load_module, so none (eval,
sample, reconstruct; --resume through the same check) can use a checkpoint copied from
another model: refused, naming the difference, with nothing changed."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import ckpt, one_line_error, snapshot, vae


def test_a_checkpoint_from_another_model_is_refused(run_copy: Path):
    state = ckpt(run_copy)
    state["hyper_parameters"]["config"]["likelihood"] = "gaussian"
    for name in ("best.ckpt", "last.ckpt"):
        torch.save(state, run_copy / "checkpoints" / name)
    before = snapshot(run_copy)
    line = one_line_error(vae("train", "--resume", run_copy, "--max-steps", 40))
    assert "does not belong to" in line and "its likelihood is 'gaussian'" in line
    assert "says 'bernoulli'" in line
    assert snapshot(run_copy) == before
    for command in ("sample", "eval", "reconstruct"):
        assert "likelihood is 'gaussian'" in one_line_error(vae(command, run_copy))
    assert snapshot(run_copy) == before
