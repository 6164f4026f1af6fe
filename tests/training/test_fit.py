"""training/fit.py: `vae train` writes a complete run directory; a run is its directory (a
moved run resumes in place and writes nowhere else); --smoke keeps no files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from conftest import ckpt, run_dir, snapshot, vae


@pytest.mark.slow
def test_train_writes_a_complete_run_directory(trained_workdir: Path):
    d = run_dir(trained_workdir)
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                 "samples-mean.png", "samples-stochastic.png", "elbo.png"):  # fmt: skip
        assert (d / name).is_file(), name
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["experiment"] == "quickstart" and cfg["max_steps"] == 60  # flag beat the experiment
    assert cfg["latent_dim"] == 8  # from the experiment


@pytest.mark.slow
def test_smoke_keeps_no_files(cli, tmp_path: Path):
    result = cli("train", "--experiment", "quickstart", "--smoke")
    assert result.exit_code == 0, result.output
    assert "smoke ok" in result.output
    assert not (tmp_path / "runs").exists()


def test_resume_of_a_moved_run_writes_only_inside_it(run_copy: Path):
    runs = run_copy.parent.parent
    other = runs / "quickstart" / "version_1"  # another run, where the moved one used to point
    shutil.copytree(run_copy, other)
    moved = runs / "archive" / "version_1"
    moved.parent.mkdir()
    run_copy.rename(moved)  # `mv R/quickstart/version_0 R/archive/version_1`
    untouched = snapshot(other)
    result = vae("train", "--resume", moved, "--max-steps", 40)
    assert result.exit_code == 0, result.output
    assert snapshot(other) == untouched  # byte for byte, and not even touched
    assert ckpt(moved)["global_step"] == 40
    assert sorted(p.name for p in runs.iterdir()) == ["archive", "quickstart"]
    assert sorted(p.name for p in (runs / "quickstart").iterdir()) == ["version_1"]
    assert "39" in [r.split(",")[1] for r in (moved / "metrics.csv").read_text().splitlines()]
