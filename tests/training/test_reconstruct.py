"""training/reconstruct.py: inputs above their reconstructions."""

from __future__ import annotations

import torch

from vae_cli.training.reconstruct import interleave


def test_interleave_puts_inputs_above_reconstructions():
    inputs, recons = torch.zeros(10, 1, 2, 2), torch.ones(10, 1, 2, 2) * 0.5
    grid = interleave(inputs, recons, per_row=8)
    assert grid.shape == (32, 1, 2, 2)  # 2 chunks x (8 inputs + 8 recons), padded
    assert (grid[:8] == 0).all() and (grid[8:16] == 0.5).all()
    assert (grid[16:18] == 0).all() and (grid[18:24] == 1).all()  # blank cells after input 10
    assert (grid[24:26] == 0.5).all()
