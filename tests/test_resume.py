"""Kill-and-resume equals an uninterrupted run; NaNs never reach a checkpoint; nothing is overwritten."""

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
from conftest import ROOT, run_vae
from typer.testing import CliRunner

from vae_cli.cli import app
from vae_cli.model import estimators

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
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VAE_EXPERIMENTS": str(ROOT / "experiments.yaml")}
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


def train_in_process(tmp_path: Path, *args: str):
    runner = CliRunner(env={"VAE_EXPERIMENTS": str(ROOT / "experiments.yaml")})
    return runner.invoke(app, [*TRAIN[:3], "--epochs", "2", "--runs-dir", str(tmp_path / "runs"), *args])


def poison_31st_training_elbo(monkeypatch: pytest.MonkeyPatch, poison) -> None:
    """Apply `poison` to the ELBO terms of the 31st training batch (epoch 1; epoch 0's
    checkpoint exists)."""
    real, calls = estimators.elbo, {"n": 0}

    def elbo(vae, x, *a, **k):
        out = real(vae, x, *a, **k)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 31:
                out = poison(out)
        return out

    monkeypatch.setattr(estimators, "elbo", elbo)


@pytest.fixture
def nan_at_step_30(monkeypatch: pytest.MonkeyPatch):
    """The loss of the 31st training batch is NaN (it is built from recon and kl, or the elbo)."""
    nan = float("nan")
    poison_31st_training_elbo(
        monkeypatch, lambda out: {**out, "elbo": out["elbo"] * nan, "recon": out["recon"] * nan}
    )


def assert_stopped_with_epoch_0_kept(result, message: str, tmp_path: Path) -> None:
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and type(result.exception) is SystemExit, result.output
    assert message in text
    state = last(tmp_path / "runs" / "quickstart" / "version_0")
    assert state["global_step"] == 26  # epoch 0's checkpoint, untouched
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values())


def test_nan_stops_and_keeps_the_last_good_checkpoint(nan_at_step_30, tmp_path: Path):
    result = train_in_process(tmp_path)
    message = "non-finite loss (nan) at step 30 (epoch 1): training stopped before the update"
    assert_stopped_with_epoch_0_kept(result, message, tmp_path)


@pytest.mark.parametrize("fault", ["nan_at_step_30", "nan_gradient_at_step_30"], ids=["loss", "gradient"])
def test_nan_skip_drops_the_update_and_finishes(fault: str, request: pytest.FixtureRequest, tmp_path: Path):
    request.getfixturevalue(fault)
    result = train_in_process(tmp_path, "--nonfinite", "skip")
    assert result.exit_code == 0, result.output
    assert "skipped 1 update(s)" in result.output
    state = last(tmp_path / "runs" / "quickstart" / "version_0")
    assert state["global_step"] == 52  # Lightning counts the step; the weights did not move
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values())


def test_nan_weights_are_never_written(tmp_path: Path):
    from vae_cli.errors import VaeError
    from vae_cli.train.checkpointing import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    before = path.read_bytes()
    with pytest.raises(VaeError, match="non-finite weights in w"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan")])}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_eval_and_sample_leave_the_checkpoint_alone(reference: Path, tmp_path: Path):
    ckpts = sorted((reference / "checkpoints").iterdir())
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ckpts}
    mtimes = {p.name: p.stat().st_mtime_ns for p in ckpts}
    runner = CliRunner(env={"VAE_EXPERIMENTS": str(ROOT / "experiments.yaml")})
    assert runner.invoke(app, ["eval", str(reference), "-k", "5"]).exit_code == 0
    assert runner.invoke(app, ["sample", str(reference), "--out", str(tmp_path / "s.png")]).exit_code == 0
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ckpts} == digest
    assert {p.name: p.stat().st_mtime_ns for p in ckpts} == mtimes


def test_runs_started_together_get_their_own_folders(tmp_path: Path):
    from concurrent.futures import ThreadPoolExecutor

    from vae_cli.runs import claim_version

    (tmp_path / "exp" / "version_0").mkdir(parents=True)
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda _: claim_version(tmp_path / "exp"), range(16)))
    assert sorted(versions) == list(range(1, 17))


@pytest.mark.parametrize(
    ("mode", "skip_grad_norm"), [("skip", 0.0), ("stop", 1000.0), ("skip", 1000.0)],
    ids=["skip-finiteness-check", "stop-norm-check", "skip-norm-check"],
)  # fmt: skip
def test_guard_catches_a_nonfinite_gradient_behind_a_finite_loss(mode: str, skip_grad_norm: float):
    """Where the guard reads the gradients (skip mode, or a norm threshold) one NaN among
    many is caught before the update; a large finite norm is skipped in either mode."""
    from vae_cli.train.guards import NonFiniteError, NonFiniteGuard

    params = [torch.nn.Parameter(torch.zeros(s)) for s in ((200, 784), (200,), (3, 3))]
    opt = torch.optim.SGD(params, lr=0.1)
    loss = torch.tensor(1.5)

    def grads(bad: float) -> None:
        for p in params:
            p.grad = torch.ones_like(p)
        params[1].grad[7] = bad

    grads(1.0)
    NonFiniteGuard(mode, skip_grad_norm).check(loss, opt, "step 3", lambda: "kept")
    assert all(p.grad is not None for p in params)  # a good update is left alone
    grads(float("nan"))
    guard = NonFiniteGuard(mode, skip_grad_norm)
    if mode == "stop":
        with pytest.raises(NonFiniteError, match=r"non-finite gradient.* at step 3: .*; kept"):
            guard.check(loss, opt, "step 3", lambda: "kept")
        return
    guard.check(loss, opt, "step 3", lambda: "kept")
    assert guard.skipped == 1 and all(p.grad is None for p in params)
    if skip_grad_norm:
        grads(1e6)  # finite, but the norm is far above the threshold
        guard = NonFiniteGuard("stop", skip_grad_norm)
        guard.check(loss, opt, "step 3", lambda: "kept")
        assert guard.skipped == 1 and all(p.grad is None for p in params)


@pytest.fixture
def nan_gradient_at_step_30(monkeypatch: pytest.MonkeyPatch):
    """The 31st training batch has a finite loss but NaN gradients (epoch 1)."""

    def poison(out):
        out["elbo"].register_hook(lambda g: g * float("nan"))
        return out

    poison_31st_training_elbo(monkeypatch, poison)


def test_nan_gradient_behind_a_finite_loss_stops_at_the_next_step(nan_gradient_at_step_30, tmp_path: Path):
    """The default guard reads only the loss: the NaN gradient reaches the weights in memory,
    the next loss is NaN, and training stops there with the last good checkpoint kept."""
    result = train_in_process(tmp_path)
    message = "non-finite loss (nan) at step 31 (epoch 1) (the weights were already non-finite"
    assert_stopped_with_epoch_0_kept(result, message, tmp_path)
