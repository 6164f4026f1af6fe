"""Two CPU processes (gloo) through Lightning's ddp strategy: one set of run files, and the
same test ELBO / IW bound on 1 and 2 devices. Plus the pieces that make that true."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_vae

from vae_cli.train.fit import _tensorboard_available

DDP2 = ("--strategy", "ddp", "--devices", "2", "--accelerator", "cpu")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("ddp")
    result = run_vae("train", "--experiment", "quickstart", "--max-steps", "20", *DDP2, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, result.stdout


@pytest.mark.slow
def test_ddp_training_writes_one_run_directory_once(ddp_run: tuple[Path, str]):
    cwd, stdout = ddp_run
    (run,) = (cwd / "runs" / "quickstart").iterdir()  # both ranks logged into one version
    assert run.name == "version_0"
    # one TensorBoard file, not one per rank (none where tensorboard is not installed: optional)
    assert len(list(run.glob("events.out.tfevents.*"))) == int(_tensorboard_available())
    for name in ("config.yaml", "metrics.csv", "samples-mean.png", "elbo.png", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert stdout.count("training summary") == 1  # rank 1 prints nothing
    assert "20" in next(line for line in stdout.splitlines() if "epochs / steps" in line)


def evaluate(cwd: Path, *flags: str) -> tuple[dict, str]:
    run = cwd / "runs" / "quickstart" / "version_0"
    result = run_vae("eval", str(run), "--iw-samples", "20", "--batch-size", "100", *flags, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run / "eval.json").read_text()), result.stdout


@pytest.mark.slow
def test_eval_is_the_same_on_one_and_two_devices(ddp_run: tuple[Path, str]):
    cwd, _ = ddp_run
    one, _ = evaluate(cwd, "--devices", "1", "--accelerator", "cpu")
    two, stdout = evaluate(cwd, *DDP2)
    # 360 test examples, batches of 100: 4 batches (the last of 60), dealt 2 + 2
    assert one["n_examples"] == two["n_examples"] == 360
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for key in ("elbo", "recon", "kl", "iw", "elbo_stderr", "iw_stderr"):
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=1e-6), key
    assert stdout.count("test set") == 1  # only rank 0 reports


@pytest.mark.slow
def test_bf16_mixed_eval_matches_full_precision(ddp_run: tuple[Path, str]):
    cwd, _ = ddp_run
    full, _ = evaluate(cwd, "--accelerator", "cpu")
    bf16, _ = evaluate(cwd, "--accelerator", "cpu", "--precision", "bf16-mixed")
    assert bf16["precision"] == "bf16-mixed"
    # bf16 matmuls in the networks move the ELBO by far less than its standard error
    assert abs(bf16["elbo"] - full["elbo"]) < 0.25 * full["elbo_stderr"]
    assert abs(bf16["iw"] - full["iw"]) < 0.25 * full["iw_stderr"]
