"""Shared fixtures: the CLI in-process (CliRunner) and as a subprocess (`python -m vae_cli`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vae_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Invoke `vae ARGS...` in-process from a fresh working directory; returns the Result."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAE_EXPERIMENTS", str(ROOT / "experiments.yaml"))
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def run_vae(*args: str, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`vae ARGS...` in a subprocess, importing this checkout's vae_cli (not an installed one)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VAE_EXPERIMENTS": str(ROOT / "experiments.yaml")}
    return subprocess.run(
        [sys.executable, "-m", "vae_cli", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short bernoulli run on the digits with a 2-D latent space, trained once per session
    through the Python API (vae_cli.fit, the same training as `vae train`)."""
    import vae_cli

    runs_dir = tmp_path_factory.mktemp("tiny-runs")
    settings = {"dataset": "digits", "likelihood": "bernoulli", "latent_dim": 2, "hidden_dim": 64,
                "batch_size": 50, "epochs": 3, "steps_per_call": 4, "runs_dir": str(runs_dir),
                "experiment": "tiny", "accelerator": "cpu"}  # fmt: skip
    return vae_cli.fit(settings)
