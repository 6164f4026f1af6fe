"""Every row of docs/errors.md: bad input -> a short error naming the problem, exit != 0, no traceback.

In-process (CliRunner) a traceback would surface as an uncaught exception in
`result.exception`; the rows assert it is the clean SystemExit of `friendly` instead. Two
rows also run as real subprocesses and check stderr for "Traceback".
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import EXPERIMENTS, ROOT, run_vae
from typer.testing import CliRunner

from vae_cli.cli import app
from vae_cli.data import datasets
from vae_cli.data import registry as data

DOC = (ROOT / "docs" / "errors.md").read_text()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny trained run plus the broken files the rows need."""
    tmp = tmp_path_factory.mktemp("errors")
    runner = CliRunner(env={"VAE_EXPERIMENTS": str(EXPERIMENTS)})
    runs = tmp / "runs"
    result = runner.invoke(
        app, ["train", "--experiment", "quickstart", "--max-steps", "2", "--runs-dir", str(runs)]
    )
    assert result.exit_code == 0, result.output
    (tmp / "bad.yaml").write_text("latent_dim: [8\n")
    (tmp / "typo.yaml").write_text("latent_dims: 8\n")
    (tmp / "type.yaml").write_text("batch_size: many\n")
    (tmp / "corrupt.ckpt").write_bytes(b"this is not a checkpoint")
    (tmp / "not-a-run").mkdir()
    (tmp / "mnist-partial" / "MNIST" / "raw").mkdir(parents=True)
    (tmp / "afile").write_text("a file, not a folder")
    return {"tmp": str(tmp), "run": str(runs / "quickstart" / "version_0"), "runs": str(runs)}


# (id, args with {tmp}/{run}/{runs} placeholders, text the error must contain)
ROWS = [
    (
        "likelihood",
        "train --likelihood bernouli",
        'unknown likelihood "bernouli" (did you mean "bernoulli"?)',
    ),
    ("dataset", "train --dataset mnsit", 'unknown dataset "mnsit" (did you mean "mnist"?)'),
    ("arch", "train --arch mpl", 'unknown arch "mpl" (did you mean "mlp"?)'),
    (
        "experiment",
        "train --experiment quikstart",
        'unknown experiment "quikstart" (did you mean "quickstart"?)',
    ),
    ("strategy", "train --strategy dpp", 'unknown strategy "dpp" (did you mean "ddp"?)'),
    ("precision", "train --precision 16-mix", 'unknown precision "16-mix" (did you mean "16-mixed"?)'),
    ("nonfinite", "train --nonfinite skp", 'unknown nonfinite "skp" (did you mean "skip"?)'),
    ("yaml-syntax", "train --config {tmp}/bad.yaml", "is not valid YAML at line 2: fix the syntax and retry"),
    ("yaml-key", "train --config {tmp}/typo.yaml", 'unknown key "latent_dims" in'),
    (
        "yaml-type",
        "train --config {tmp}/type.yaml",
        "\"batch_size\" in {tmp}/type.yaml must be int, got str 'many'",
    ),
    ("batch-size", "train --batch-size -5", "batch_size must be >= 1, got -5"),
    ("latent-dim", "train --latent-dim 0", "latent_dim must be >= 1, got 0"),
    ("k-zero", "train --k 0", "k must be >= 1, got 0"),
    ("steps-per-call", "train --steps-per-call 0", "steps_per_call must be >= 1, got 0"),
    ("iw-samples", "eval {run} -k -1", "--iw-samples must be >= 0 and --chunk >= 1"),
    ("skip-grad-norm", "train --skip-grad-norm -1", "skip_grad_norm must be >= 0 (0: off), got -1.0"),
    (
        "ckpt-missing",
        "eval {tmp}/nope.ckpt",
        "nope.ckpt does not exist: pass a run directory or a .ckpt file",
    ),
    ("ckpt-corrupt", "eval {tmp}/corrupt.ckpt", "corrupt.ckpt is not a readable vae-cli checkpoint"),
    (
        "ckpt-likelihood",
        "eval {run} --likelihood gaussian",
        'the checkpoint was trained with likelihood "bernoulli", not "gaussian"',
    ),
    (
        "ckpt-shape",
        "eval {run} --dataset mnist",
        "the checkpoint models 1x8x8 images (digits) but mnist has 1x28x28",
    ),
    ("run-missing", "eval {tmp}/runs/quickstart/version_9", "version_9 does not exist"),
    ("run-no-ckpt", "sample {tmp}/not-a-run", "holds no checkpoints/best.ckpt or last.ckpt"),
    ("resume-missing", "train --resume {tmp}/runs/quickstart/version_9", "no such run directory"),
    ("resume-none", "train --resume last --runs-dir {tmp}/empty-runs", "--resume last: no run with"),
    ("resume-change", "train --resume {run} --lr 0.1", "--lr cannot change it"),
    (
        "data-files",
        "train --dataset mnist --data-dir {tmp}/mnist-partial",
        "MNIST not found in {tmp}/mnist-partial/MNIST/raw: missing train-images-idx3-ubyte.gz",
    ),
    ("runs-dir-unwritable", "train --runs-dir {tmp}/afile/runs", "cannot write to {tmp}/afile/runs"),
    ("out-unwritable", "sample {run} --out {tmp}/afile/x.png", "cannot write to {tmp}/afile"),
    ("devices-cpu", "train --accelerator cpu --devices 100000", "--devices 100000 but this machine has"),
    (
        "devices-gpu",
        "train --accelerator gpu --devices 100000",
        "Lightning rejected the trainer settings (accelerator=gpu devices=100000",
    ),
    (
        "strategy-hw",
        "train --accelerator cpu --strategy fsdp",
        "Lightning rejected the trainer settings (accelerator=cpu devices=1 strategy=fsdp",
    ),
]


def fill(text: str, env: dict[str, str]) -> str:
    return text.format(**env)


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_row(row, env, monkeypatch: pytest.MonkeyPatch):
    name, args, expected = row
    monkeypatch.chdir(env["tmp"])
    runner = CliRunner(env={"VAE_EXPERIMENTS": str(EXPERIMENTS)})
    result = runner.invoke(app, fill(args, env).split())
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert type(result.exception) is SystemExit  # not an uncaught exception (= a traceback)
    assert "error: " in result.output and fill(expected, env) in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2
    assert expected.split("{")[0] in DOC, name  # the row is documented with its exact message


@pytest.mark.slow
def test_typer_usage_error_is_clean(env):
    proc = run_vae("train", "--epochs", "many", cwd=Path(env["tmp"]))
    assert proc.returncode == 2
    assert "Invalid value for '--epochs'" in proc.stderr and "Traceback" not in proc.stderr
    assert "Invalid value for '--epochs'" in DOC


@pytest.mark.slow
def test_subprocess_has_no_traceback_and_debug_shows_it(env):
    proc = run_vae("eval", Path(env["tmp"]) / "corrupt.ckpt", cwd=Path(env["tmp"]))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is not a readable vae-cli checkpoint" in proc.stderr
    debug = run_vae("--debug", "eval", Path(env["tmp"]) / "corrupt.ckpt", cwd=Path(env["tmp"]))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_mnist_empty_dir_offline_fails_fast(env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """No MNIST folder at all and no network: one probe, then a clean error (no slow retries)."""
    import time

    monkeypatch.setattr(datasets, "_reachable", lambda url, timeout=3.0: False)
    runner = CliRunner(env={"VAE_EXPERIMENTS": str(EXPERIMENTS)})
    start = time.perf_counter()
    result = runner.invoke(app, ["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--runs-dir",
                                 str(tmp_path / "runs")])  # fmt: skip
    assert time.perf_counter() - start < 5
    assert result.exit_code == 2 and type(result.exception) is SystemExit
    assert "MNIST not found in" in result.output and "the download server is unreachable" in result.output
    assert "the download server is unreachable" in DOC
    assert not (tmp_path / "runs").exists()  # nothing written


def test_data_outside_the_likelihoods_support(env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A plugged-in loader that returns normalised floats in [-1, 1] instead of 8-bit images."""
    x = torch.linspace(-1, 1, 300 * 64).view(300, 1, 8, 8)
    spec = data.DatasetSpec((1, 8, 8), lambda d: (x, x[:50].clone()), 50, "floats in [-1, 1]")
    monkeypatch.setitem(data.DATASETS, "floaty", spec)
    runner = CliRunner(env={"VAE_EXPERIMENTS": str(EXPERIMENTS)})
    result = runner.invoke(app, ["train", "--dataset", "floaty", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and type(result.exception) is SystemExit
    text = " ".join(result.output.split())
    assert 'dataset "floaty" gave float32 values in [-1, 1]' in text
    assert 'outside what likelihood "bernoulli" scores' in text and "outside what likelihood" in DOC


def test_doc_table_has_every_row():
    rows = [line for line in DOC.splitlines() if line.startswith("| `")]
    assert len(rows) >= 20
