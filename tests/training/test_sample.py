"""training/sample.py: `vae sample` draws E[x|z] (grey levels) or x ~ p(x|z) (exactly 0 or 1
for a Bernoulli) into a captioned grid of --n cells, never replacing the run's own samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_dir, run_vae
from PIL import Image


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255


def grid_scale(width: int, per_row: int, side: int = 8, pad: int = 2) -> int:
    """The whole-number upscale factor of a grid `width` px wide (report.render's layout)."""
    scale = (width - pad - per_row * pad) // (per_row * side)
    assert per_row * (side * scale + pad) + pad == width, "not a grid of whole-pixel cells"
    return scale


def cells(img: np.ndarray, side: int = 8, n: int = 64, pad: int = 2) -> np.ndarray:
    """The pixel values inside the grid cells (one per upscaled block), from the square grid
    at the bottom of the image (the caption is above it)."""
    per_row = int(np.ceil(np.sqrt(n)))
    scale = grid_scale(img.shape[1], per_row, side, pad)
    grid = img[-img.shape[1] :]
    at = [pad + i * (side * scale + pad) for i in range(per_row)]
    span = side * scale
    return np.stack([grid[r : r + span : scale, c : c + span : scale] for r in at for c in at])


@pytest.mark.slow
def test_sample_mean_vs_stochastic_for_bernoulli(trained_workdir: Path):
    mean = run_vae("sample", "--n", "64", "--out", "mean.png", cwd=trained_workdir)
    stoch = run_vae("sample", "--n", "64", "--stochastic", cwd=trained_workdir)  # default path in the run dir
    assert mean.returncode == 0 and stoch.returncode == 0, mean.stderr + stoch.stderr
    # a new file: training's own samples-stochastic.png (other weights) is never replaced
    assert "samples-stochastic-seed0-T1-n64.png" in stoch.stdout and "x ~ p(x|z)" in stoch.stdout
    assert "E[x|z]" in mean.stdout
    m, s = (
        read_png(trained_workdir / "mean.png"),
        read_png(run_dir(trained_workdir) / "samples-stochastic-seed0-T1-n64.png"),
    )
    assert m.shape == s.shape and m.shape[1] >= 400  # 8x8 digits upscaled to a readable size
    assert m.shape[0] > m.shape[1] + 20 and m[: m.shape[0] - m.shape[1]].min() < 0.4  # a caption
    s_cells, m_cells = cells(s), cells(m)
    assert set(np.unique(s_cells)) <= {0.0, 1.0}, "x ~ Bernoulli: every pixel exactly 0 or 1"
    assert ((m_cells > 0.02) & (m_cells < 0.98)).mean() > 0.2, "E[x|z] = sigmoid(logits): grey levels"


@pytest.mark.slow
def test_sample_n_sets_grid_size(trained_workdir: Path):
    r = run_vae("sample", "--n", "9", "--out", "nine.png", cwd=trained_workdir)
    assert r.returncode == 0, r.stderr
    img = read_png(trained_workdir / "nine.png")
    assert grid_scale(img.shape[1], per_row=3) >= 2 and img.shape[1] >= 400  # 3 cells per row
    assert cells(img, n=9).shape == (9, 8, 8)
