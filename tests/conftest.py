"""Shared fixtures: the CLI in-process (CliRunner) and as a subprocess (`python -m vae_cli`);
small helpers used by several test modules."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from typer.testing import CliRunner

from vae_cli.cli import app
from vae_cli.settings import Config, RunSettings

if TYPE_CHECKING:
    from vae_cli.training.module import VAEModule

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "vae_cli" / "experiments.yaml"  # the packaged file, whatever the working directory


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Invoke `vae ARGS...` in-process from a fresh working directory; returns the Result."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAE_EXPERIMENTS", str(EXPERIMENTS))
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def run_vae(*args: str, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`vae ARGS...` in a subprocess, importing this checkout's vae_cli (not an installed one)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VAE_EXPERIMENTS": str(EXPERIMENTS)}
    return subprocess.run(
        [sys.executable, "-m", "vae_cli", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short bernoulli run on the digits with a 2-D latent space, trained once per session
    through the Python API (vae_cli.train, the same training as `vae train`)."""
    import vae_cli

    runs_dir = tmp_path_factory.mktemp("tiny-runs")
    settings = {"dataset": "digits", "likelihood": "bernoulli", "latent_dim": 2, "hidden_dim": 64,
                "batch_size": 50, "epochs": 3, "steps_per_call": 4, "runs_dir": str(runs_dir),
                "experiment": "tiny", "accelerator": "cpu"}  # fmt: skip
    return vae_cli.train(settings)


# ---------------------------------------------------------------- helpers shared by test modules
def digits_module(**overrides) -> VAEModule:
    from vae_cli.training.module import VAEModule  # Lightning: only for the tests that need it

    cfg = Config(dataset="digits", latent_dim=4, hidden_dim=32, **overrides).validate()
    return VAEModule(cfg.to_dict()).eval()


def binary_batch(n: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.3), generator=g)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def cpu(tmp_path: Path) -> RunSettings:
    """Hardware and output of in-process test runs: run settings, apart from the model's Config."""
    return RunSettings(runs_dir=str(tmp_path), accelerator="cpu")


def small_run(tmp_path: Path, name: str, **overrides) -> Config:
    values = dict(experiment=name, dataset="digits", batch_size=50, epochs=2, latent_dim=4,
                  hidden_dim=32, log_every_n_steps=4)  # fmt: skip
    return Config(**{**values, **overrides}).validate()


def random_data(support: str, shape, gen: torch.Generator) -> torch.Tensor:
    if support == "binary":
        return torch.randint(0, 2, shape, generator=gen).double()
    if support == "unit":
        return torch.rand(shape, generator=gen, dtype=torch.float64)
    return torch.randint(0, 256, shape, generator=gen).double()


# ---------------------------------------------------------------- sweeps
# --set flags that make every sweep member train in seconds on the CPU
SWEEP_TINY = (
    "--set",
    "latent_dim=2",
    "--set",
    "hidden_dim=8",
    "--set",
    "batch_size=50",
    "--set",
    "accelerator=cpu",
)


def run_sweep(cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`vae sweep ARGS...` in a subprocess, importing this checkout's vae_cli."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VAE_EXPERIMENTS": str(EXPERIMENTS)}
    return subprocess.run([sys.executable, "-m", "vae_cli", "sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
