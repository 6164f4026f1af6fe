"""Shared fixtures: the CLI in-process (CliRunner) and as a subprocess (`python -m vae_cli`),
trained runs shared by several test modules (each trained once per session); small helpers
used by several test modules."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
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


@pytest.fixture(autouse=True, scope="session")
def build_the_cli_once():
    """typer.testing.CliRunner rebuilds the whole click command tree (every option of every
    command, with type hints and pydantic adapters) on each invoke: ~12 ms, a third of the
    quick subset's ~400 in-process CLI calls. Built once here; the commands look up what they
    call at run time, so monkeypatched functions still take effect. Raises if typer renames it."""
    import functools

    import typer.testing

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.testing, "_get_command", functools.cache(typer.testing._get_command))
        yield


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


# ---------------------------------------------------------------- trained runs, shared by test modules
STEPS = 30  # quickstart: 26 steps per epoch, so the run ends 4 steps into its second epoch


def vae(*args: object):
    """`vae ARGS...` in-process (CliRunner) in the current working directory; returns the Result."""
    runner = CliRunner(env={"VAE_EXPERIMENTS": str(EXPERIMENTS)})
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, code: int = 2) -> str:
    """The CLI's contract for a refused input: exit `code`, one line starting `error:`."""
    assert result.exit_code == code, result.output
    assert type(result.exception) is SystemExit, result.exception  # not an uncaught exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    # the one error line ends the output (a training command may have drawn its progress bar)
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], result.output
    assert lines[-1].startswith("error:") and "Traceback" not in result.output
    return lines[-1]


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under folder: (sha256, mtime_ns)."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def ckpt(run: Path, name: str = "last") -> dict:
    return torch.load(run / "checkpoints" / f"{name}.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/quickstart/version_0, stopped by --max-steps 30 (mid-epoch), trained in-process once
    per session; tests that change a run work on run_copy."""
    runs = tmp_path_factory.mktemp("trained") / "runs"
    result = vae("train", "-e", "quickstart", "--max-steps", STEPS, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    return runs / "quickstart" / "version_0"


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "runs" / "quickstart" / "version_0"
    shutil.copytree(trained, dst)
    return dst


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short quickstart run by `vae train` in a subprocess, in a fresh working directory
    (returned; the run is run_dir(it)), trained once per session."""
    cwd = tmp_path_factory.mktemp("work")
    result = run_vae("train", "--experiment", "quickstart", "--max-steps", "60", "--epochs", "3", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd


def run_dir(cwd: Path) -> Path:
    """The one run under cwd/runs/quickstart (trained_workdir's)."""
    (path,) = (cwd / "runs" / "quickstart").glob("version_*")
    return path


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
