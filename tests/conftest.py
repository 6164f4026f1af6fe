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
