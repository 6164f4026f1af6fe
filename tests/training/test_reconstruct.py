"""training/reconstruct.py: inputs above their reconstructions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vae_cli.training.reconstruct import interleave


def test_interleave_puts_inputs_above_reconstructions():
    inputs, recons = torch.zeros(10, 1, 2, 2), torch.ones(10, 1, 2, 2) * 0.5
    grid = interleave(inputs, recons, per_row=8)
    assert grid.shape == (32, 1, 2, 2)  # 2 chunks x (8 inputs + 8 recons), padded
    assert (grid[:8] == 0).all() and (grid[8:16] == 0.5).all()
    assert (grid[16:18] == 0).all() and (grid[18:24] == 1).all()  # blank cells after input 10
    assert (grid[24:26] == 0.5).all()


def test_sample_title_names_the_temperature():
    from vae_cli.training.sample import sample_title

    assert sample_title(False) == "decoder means E[x|z], z ~ p(z)"
    assert sample_title(True, 1.0) == "samples x ~ p(x|z), z ~ p(z)"
    assert sample_title(False, 0.5) == "decoder means E[x|z], z ~ N(0, 0.5² I)"
    assert sample_title(True, 2.0).endswith("z ~ N(0, 2² I)")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sample", "reconstruct"])
def test_out_refuses_an_existing_file(tiny_run: Path, tmp_path: Path, cli, command: str):
    taken = [tiny_run / "samples-mean.png", tmp_path / "mine.png"]
    taken[1].write_bytes(b"earlier work")
    before = [p.read_bytes() for p in taken]
    for path in taken:
        result = cli(command, tiny_run, "--out", path)
        assert result.exit_code == 2, result.output
        line = " ".join(result.output.split())
        assert f"--out {path} already exists" in line and "pass a new file name" in line
    assert [p.read_bytes() for p in taken] == before
    fresh = tmp_path / "fresh.png"
    assert cli(command, tiny_run, "--out", fresh).exit_code == 0 and fresh.is_file()
    again = cli(command, tiny_run, "--out", fresh)  # a second command's --out keeps the first's
    assert again.exit_code == 2 and "already exists" in again.output
