"""`vae` end to end on the offline digits data: train, eval, sample, experiments, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_vae
from PIL import Image


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short quickstart run in a fresh folder, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("work")
    result = run_vae("train", "--experiment", "quickstart", "--max-steps", "60", "--epochs", "3", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd


def run_dir(cwd: Path) -> Path:
    (path,) = (cwd / "runs" / "quickstart").glob("version_*")
    return path


@pytest.mark.slow
def test_train_writes_a_complete_run_directory(trained: Path):
    d = run_dir(trained)
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                 "samples-mean.png", "samples-stochastic.png", "elbo.png"):  # fmt: skip
        assert (d / name).is_file(), name
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["experiment"] == "quickstart" and cfg["max_steps"] == 60  # flag beat the experiment
    assert cfg["latent_dim"] == 8  # from the experiment


@pytest.mark.slow
def test_eval_writes_eval_json_with_iw_bound_above_elbo(trained: Path):
    result = run_vae("eval", "--iw-samples", "50", cwd=trained)
    assert result.returncode == 0, result.stderr
    ev = json.loads((run_dir(trained) / "eval.json").read_text())
    assert ev["n_examples"] == 360 and ev["iw_samples"] == 50
    assert ev["iw"] > ev["elbo"]  # the IW bound is the tighter one, on the same examples
    assert abs(ev["elbo"] - (ev["recon"] - ev["kl"])) < 1e-3
    # binary data: no offset; float64 throughout (float32 would be off by ~1e-8 relative)
    assert ev["bpd_elbo"] == pytest.approx(-ev["elbo"] / (64 * np.log(2)), rel=1e-13)
    assert ev["bpd_iw"] == pytest.approx(-ev["iw"] / (64 * np.log(2)), rel=1e-13)
    assert "binarised once" in ev["data_protocol"]


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
def test_sample_mean_vs_stochastic_for_bernoulli(trained: Path):
    mean = run_vae("sample", "--n", "64", "--out", "mean.png", cwd=trained)
    stoch = run_vae("sample", "--n", "64", "--stochastic", cwd=trained)  # default path in the run dir
    assert mean.returncode == 0 and stoch.returncode == 0, mean.stderr + stoch.stderr
    # a new file: training's own samples-stochastic.png (other weights) is never replaced
    assert "samples-stochastic-seed0-T1-n64.png" in stoch.stdout and "x ~ p(x|z)" in stoch.stdout
    assert "E[x|z]" in mean.stdout
    m, s = read_png(trained / "mean.png"), read_png(run_dir(trained) / "samples-stochastic-seed0-T1-n64.png")
    assert m.shape == s.shape and m.shape[1] >= 400  # 8x8 digits upscaled to a readable size
    assert m.shape[0] > m.shape[1] + 20 and m[: m.shape[0] - m.shape[1]].min() < 0.4  # a caption
    s_cells, m_cells = cells(s), cells(m)
    assert set(np.unique(s_cells)) <= {0.0, 1.0}, "x ~ Bernoulli: every pixel exactly 0 or 1"
    assert ((m_cells > 0.02) & (m_cells < 0.98)).mean() > 0.2, "E[x|z] = sigmoid(logits): grey levels"


@pytest.mark.slow
def test_sample_n_sets_grid_size(trained: Path):
    r = run_vae("sample", "--n", "9", "--out", "nine.png", cwd=trained)
    assert r.returncode == 0, r.stderr
    img = read_png(trained / "nine.png")
    assert grid_scale(img.shape[1], per_row=3) >= 2 and img.shape[1] >= 400  # 3 cells per row
    assert cells(img, n=9).shape == (9, 8, 8)


def test_unknown_experiment_is_a_clean_error(cli):
    result = cli("train", "--experiment", "quickstrat")
    assert result.exit_code == 2
    assert 'unknown experiment "quickstrat" (did you mean "quickstart"?)' in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_flag_overrides_reach_the_run(cli, tmp_path: Path):
    result = cli("train", "--experiment", "quickstart", "--likelihood", "gaussian", "--sigma", "0.2",
                 "--max-steps", "5", "--epochs", "1", "--latent-dim", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    (cfg_path,) = tmp_path.glob("runs/quickstart/version_*/config.yaml")
    cfg = yaml.safe_load(cfg_path.read_text())
    assert (cfg["likelihood"], cfg["sigma"], cfg["latent_dim"]) == ("gaussian", 0.2, 3)


@pytest.mark.slow
def test_smoke_keeps_no_files(cli, tmp_path: Path):
    result = cli("train", "--experiment", "quickstart", "--smoke")
    assert result.exit_code == 0, result.output
    assert "smoke ok" in result.output
    assert not (tmp_path / "runs").exists()


def test_experiments_lists_names(cli):
    result = cli("experiments")
    assert result.exit_code == 0
    assert "quickstart" in result.output and "mnist-bernoulli" in result.output


def test_experiments_at_80_columns_never_cut_a_name_and_show_inherited_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Names are typed: an 80-column terminal shows each whole; an experiment that takes its
    likelihood from the declared default still shows it."""
    from typer.testing import CliRunner

    from vae_cli import settings as settings_mod
    from vae_cli.cli import app

    (tmp_path / "e.yaml").write_text("experiments:\n  a-rather-long-experiment-name-here:\n    epochs: 1\n")
    monkeypatch.setenv("VAE_EXPERIMENTS", str(tmp_path / "e.yaml"))
    result = CliRunner().invoke(app, ["experiments"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "a-rather-long-experiment-name-here" in x)
    assert line.split()[1:] == [
        settings_mod.SETTINGS["dataset"].default,
        settings_mod.SETTINGS["likelihood"].default,
    ]


def test_a_missing_experiments_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from vae_cli.cli import app

    monkeypatch.setenv("VAE_EXPERIMENTS", str(tmp_path / "nope.yaml"))
    result = CliRunner().invoke(app, ["train", "-e", "quickstart", "--smoke"])
    assert result.exit_code == 2 and "VAE_EXPERIMENTS=" in result.output and "no such file" in result.output


def test_sample_without_any_run_is_a_clean_error(cli):
    result = cli("sample", "--n", "4")
    assert result.exit_code == 2 and "no trained run found" in result.output
