"""training/checkpointing.py: kill-and-resume equals an uninterrupted run; eval and sample leave
the checkpoint alone."""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import EXPERIMENTS, ROOT, run_vae
from typer.testing import CliRunner

from vae_cli.cli import app

# Long enough that a signal sent just after the first epoch's checkpoint always lands
# mid-training, also on an idle machine (a 26-step quickstart epoch takes ~0.1 s there).
EPOCHS, BATCH = 4, 10


STEPS_PER_EPOCH = -(-1257 // BATCH)  # digits training split: 1257 examples


TRAIN = ("train", "--experiment", "quickstart", "--epochs", str(EPOCHS), "--batch-size", str(BATCH))


def val_elbos(run: Path) -> list[tuple[int, float]]:
    rows = csv.DictReader((run / "metrics.csv").open())
    return [(int(r["step"]), float(r["val/elbo"])) for r in rows if r.get("val/elbo")]


def last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    proc = run_vae(*TRAIN, "--runs-dir", "runs", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp / "runs" / "quickstart" / "version_0"


def interrupt(tmp: Path, sig: int) -> subprocess.CompletedProcess:
    """Start training, signal it once the first epoch's checkpoint exists, wait for it to exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VAE_EXPERIMENTS": str(EXPERIMENTS)}
    proc = subprocess.Popen([sys.executable, "-m", "vae_cli", *TRAIN, "--runs-dir", "runs"], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    ckpt = tmp / "runs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.15)  # into the second epoch
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_killed_run_resumes_to_the_same_result(sig, reference: Path, tmp_path: Path):
    killed = interrupt(tmp_path, sig)
    run = tmp_path / "runs" / "quickstart" / "version_0"
    assert killed.returncode == 128 + sig, killed.stderr
    assert f"interrupted by {signal.Signals(sig).name} after step" in killed.stderr
    assert "Traceback" not in killed.stderr
    state = last(run)
    step = state["global_step"]
    assert 0 < step < STEPS_PER_EPOCH * EPOCHS
    # saved where it stopped: mid-epoch, with the data position of the batch after it
    position = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert (
        position["batches"] == state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    )

    resumed = run_vae("train", "--resume", "last", "--runs-dir", "runs", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]  # same run dir, no new version
    a, b = last(reference), last(run)
    assert a["global_step"] == b["global_step"] == STEPS_PER_EPOCH * EPOCHS
    for name, ref in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], ref, rtol=1e-5, atol=1e-6)
    ra, rb = val_elbos(reference), val_elbos(run)
    print(f"{signal.Signals(sig).name} at step {step}: val ELBO per epoch uninterrupted {ra} resumed {rb}")
    assert [s for s, _ in ra] == [s for s, _ in rb] and len(ra) == EPOCHS
    assert [v for _, v in rb] == pytest.approx([v for _, v in ra], rel=1e-5)
    # every logged row (same steps, none lost or duplicated) and every logged value equal:
    # val/* and also the train/* means of the interrupted epoch, whose running sums
    # resume.EpochSums carries across the interruption.
    # To the last digit: the file's text is the same (the interrupted epoch's running sums are
    # added in the same order as without the interruption: fastpath.RunningMeans.state_dict).
    rows_a, rows_b = ((r / "metrics.csv").read_text().splitlines() for r in (reference, run))
    assert len(rows_a) > EPOCHS
    assert [b for a, b in zip(rows_a, rows_b, strict=True) if a != b] == []


@pytest.mark.slow
def test_eval_and_sample_leave_the_checkpoint_alone(reference: Path, tmp_path: Path):
    ckpts = sorted((reference / "checkpoints").iterdir())
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ckpts}
    mtimes = {p.name: p.stat().st_mtime_ns for p in ckpts}
    runner = CliRunner(env={"VAE_EXPERIMENTS": str(EXPERIMENTS)})
    assert runner.invoke(app, ["eval", str(reference), "-k", "5"]).exit_code == 0
    assert runner.invoke(app, ["sample", str(reference), "--out", str(tmp_path / "s.png")]).exit_code == 0
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ckpts} == digest
    assert {p.name: p.stat().st_mtime_ns for p in ckpts} == mtimes
