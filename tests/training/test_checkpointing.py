"""training/checkpointing.py: kill-and-resume equals an uninterrupted run; eval and sample leave
the checkpoint alone; the end of a run is validated and saved (also mid-epoch), a finished run
stays finished, a failed checkpoint write keeps the last good one, and checkpoints are read
without running code."""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import EXPERIMENTS, ROOT, STEPS, ckpt, cpu, one_line_error, run_vae, small_run, snapshot, vae
from typer.testing import CliRunner

from vae_cli.cli import app
from vae_cli.training.checkpointing import RunInterrupted, finished
from vae_cli.training.fit import fit

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


# ---------------------------------------------------------------------------- how a run ends
class SignalAt(pl.Callback):
    """Sends this process `sig` once, at the end of the Lightning batch that reaches optimiser
    step `step` (GracefulStop's handler, installed at on_train_start, receives it as a real
    signal would arrive; a batch may hold several steps: --steps-per-call)."""

    def __init__(self, step: int, sig: int = signal.SIGTERM) -> None:
        self.step, self.sig, self.sent = step, sig, False

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.sig)


def end_files(run: Path) -> set[str]:
    return {p.name for p in run.iterdir()} & {"samples-mean.png", "samples-stochastic.png", "elbo.png"}


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["epochs", "max_steps"])
def test_a_signal_on_the_runs_last_step_lets_it_finish_then_reports_it(stop: str, tmp_path: Path):
    """The last step of the last epoch, or the --max-steps step mid-epoch: the run validates,
    saves and writes its figures, then stops with the signal (exit 143, `complete`)."""
    steps_per_epoch = -(-1257 // 50)
    cfg = small_run(tmp_path, "end", epochs=2, **({"max_steps": 30} if stop == "max_steps" else {}))
    final = 30 if stop == "max_steps" else 2 * steps_per_epoch
    with pytest.raises(RunInterrupted) as e:
        fit(cfg, run=cpu(tmp_path), callbacks=[SignalAt(final)])
    assert e.value.complete and e.value.step == final
    run = tmp_path / "end" / "version_0"
    assert end_files(run) == {"samples-mean.png", "samples-stochastic.png", "elbo.png"}
    assert last(run)["global_step"] == final
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["global_step"] == final  # validated at the final step, not only at an epoch end
    assert finished(last(run), cfg.epochs, cfg.max_steps)


@pytest.mark.slow
def test_a_signal_mid_run_still_stops_it_unfinished(tmp_path: Path):
    """The counterpart: a signal one step before the end is an interruption, not an ending."""
    cfg = small_run(tmp_path, "mid", epochs=1)
    with pytest.raises(RunInterrupted) as e:
        fit(cfg, run=cpu(tmp_path), callbacks=[SignalAt(5)])
    assert not e.value.complete and 5 <= e.value.step < -(-1257 // 50)
    run = tmp_path / "mid" / "version_0"
    assert end_files(run) == set()
    assert not finished(last(run), cfg.epochs, cfg.max_steps)


@pytest.mark.slow
def test_a_time_limit_validates_saves_and_resumes_with_the_whole_limit_again(tmp_path: Path):
    cfg = small_run(tmp_path, "timed", epochs=2)
    limited = dataclasses.replace(cpu(tmp_path), time_limit=1e-7)  # fires after the first step
    run = fit(cfg, run=limited)
    assert run is not None
    state = last(run)
    first = state["global_step"]  # the first Lightning batch's steps (--steps-per-call)
    assert 1 <= first < 2 * -(-1257 // 50)
    assert not finished(state, cfg.epochs, cfg.max_steps)  # so --resume continues it
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["global_step"] == first  # the validation ran at the stop, mid-epoch
    # Per process: Lightning's Timer would restore the time spent and stop at once; ours
    # gives the resumed process the limit again, so it trains one more batch.
    fit(cfg, run=limited, resume=run)
    assert first < last(run)["global_step"] <= 2 * first
    fit(cfg, run=cpu(tmp_path), resume=run)  # no limit: to the end
    assert finished(last(run), cfg.epochs, cfg.max_steps)


@pytest.mark.slow
def test_a_max_steps_run_extended_by_resume_continues_its_epoch_exactly(tmp_path: Path):
    """Stopping mid-epoch at --max-steps and resuming without it ends with the weights of an
    uninterrupted run: the resume point is the stop step, not Lightning's "epoch done" save
    after the stop's validation (which would skip the rest of the epoch)."""
    whole = fit(small_run(tmp_path, "whole", epochs=1), run=cpu(tmp_path))
    part = fit(small_run(tmp_path, "part", epochs=1, max_steps=8), run=cpu(tmp_path))
    assert whole is not None and part is not None
    assert last(part)["global_step"] == 8
    fit(small_run(tmp_path, "part", epochs=1), run=cpu(tmp_path), resume=part)
    a, b = last(whole), last(part)
    assert a["global_step"] == b["global_step"] == -(-1257 // 50)
    for name, ref in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_signal_on_an_epochs_last_batch_saves_that_epoch_and_resumes_exactly(tmp_path: Path):
    """The signal lands on the last batch of epoch 1 of 2: the stop waits for the epoch's
    validation and saves the epoch's end (before the fix, last.ckpt was the previous save,
    and the resumed run trained part of the epoch twice)."""
    steps_per_epoch = -(-1257 // 50)
    whole = fit(small_run(tmp_path, "whole", epochs=2), run=cpu(tmp_path))
    assert whole is not None
    with pytest.raises(RunInterrupted) as e:
        fit(small_run(tmp_path, "cut", epochs=2), run=cpu(tmp_path), callbacks=[SignalAt(steps_per_epoch)])
    cut = tmp_path / "cut" / "version_0"
    assert not e.value.complete and e.value.step == steps_per_epoch
    assert last(cut)["global_step"] == steps_per_epoch  # the epoch's end, not an older save
    fit(small_run(tmp_path, "cut", epochs=2), run=cpu(tmp_path), resume=cut)
    a, b = last(whole), last(cut)
    assert a["global_step"] == b["global_step"] == 2 * steps_per_epoch
    for name, ref in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], ref, rtol=1e-5, atol=1e-6)
    assert (cut / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()


# ---------------------------------------------------------------------------- the end of a run
# (conftest's `trained`: one quickstart run stopped by --max-steps 30, shared by several modules)


def test_max_steps_run_checkpoints_and_validates_its_final_step(trained: Path):
    assert ckpt(trained, "last")["global_step"] == STEPS  # not 26, the last epoch boundary
    assert ckpt(trained, "best")["global_step"] == STEPS  # validated at step 30: the best so far
    rows = (trained / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    val_steps = [r.split(",")[1] for r in rows[1:] if r.split(",")[header.index("val/elbo")]]
    assert val_steps == ["25", str(STEPS - 1)]  # epoch 0's end, and the final step


def test_run_shorter_than_an_epoch_gets_validation_and_best(tmp_path: Path):
    result = vae("train", "-e", "quickstart", "--max-steps", 5, "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    run = tmp_path / "quickstart" / "version_0"
    assert ckpt(run, "best")["global_step"] == 5 == ckpt(run, "last")["global_step"]
    assert "val ELBO (nats)" in result.output


def test_resuming_a_finished_run_changes_nothing(run_copy: Path):
    before = snapshot(run_copy)
    result = vae("train", "--resume", run_copy)
    assert result.exit_code == 0, result.output
    assert "is finished: it reached --max-steps 30 (step 30); nothing was changed" in " ".join(
        result.output.split()
    )
    assert snapshot(run_copy) == before


# ---------------------------------------------------------------------------- failed writes


@pytest.mark.slow
def test_a_failed_checkpoint_write_keeps_the_last_good_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Disk full on the 3rd checkpoint write (epoch 1's best.ckpt): one line, exit 2, epoch 0's
    checkpoints intact, no temporary file left, and --resume finishes the run."""
    real, calls = torch.save, {"n": 0}

    def save(obj, f, *a, **k):
        if isinstance(obj, dict) and "state_dict" in obj:
            calls["n"] += 1
            if calls["n"] >= 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    result = vae("train", "-e", "quickstart", "--epochs", 3, "--runs-dir", tmp_path)
    line = one_line_error(result)
    run = tmp_path / "quickstart" / "version_0"
    assert "No space left on device" in line and f"vae train --resume {run}" in line
    monkeypatch.setattr(torch, "save", real)
    assert ckpt(run)["global_step"] == 26 == ckpt(run, "best")["global_step"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    resumed = vae("train", "--resume", run)
    assert resumed.exit_code == 0, resumed.output
    assert ckpt(run)["global_step"] == 78


def test_first_checkpoint_failing_leaves_the_run_resumable_from_best(run_copy: Path):
    (run_copy / "checkpoints" / "last.ckpt").unlink()  # as if the disk filled while writing it
    result = vae("train", "--resume", run_copy)
    assert result.exit_code == 0 and "is finished" in result.output, result.output


# ---------------------------------------------------------------------------- checkpoints never run code


class Evil:
    """Unpickling this creates `marker`: what a malicious checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.fixture(params=[False, True], ids=["default-env", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"])
def evil_run(request, run_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    if request.param:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "marker"
    state = ckpt(run_copy)
    state["payload"] = Evil(marker)
    for name in ("best.ckpt", "last.ckpt"):
        torch.save(state, run_copy / "checkpoints" / name)
    return run_copy, marker


@pytest.mark.parametrize(
    "command",
    ["eval {run}", "eval {run}/checkpoints/last.ckpt", "sample {run}", "reconstruct {run}",
     "train --resume {run} --max-steps 40", "compare --run {run} -k 0 --out {run}/../cmp"],
)  # fmt: skip
def test_a_malicious_checkpoint_never_runs(command: str, evil_run: tuple[Path, Path]):
    run, marker = evil_run
    line = one_line_error(vae(*command.format(run=run).split()))
    assert "is not a readable vae-cli checkpoint (UnpicklingError)" in line
    assert not marker.exists()


def test_contradictory_torch_load_variables_are_one_line(trained: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    assert "are set, and torch refuses to load: unset one" in one_line_error(vae("sample", trained))


# ---------------------------------------------------------------------------- resume is exact


@pytest.mark.slow
def test_sigterm_and_resume_give_the_same_metrics_csv_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """In-process and small (2 epochs of 26 steps): SIGTERM in the 37th training step stops at
    the end of its Lightning batch (step 42, between two logging windows), and --resume ends
    with a metrics.csv whose text equals the uninterrupted run's, digit for digit."""
    from vae_cli.model import estimators

    train = ("train", "-e", "quickstart", "--epochs", 2, "--runs-dir")
    assert vae(*train, tmp_path / "a").exit_code == 0
    real, calls = estimators.elbo, {"n": 0}

    def elbo(*a, **k):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 37:
                os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(estimators, "elbo", elbo)
    killed = vae(*train, tmp_path / "b")
    assert killed.exit_code == 143 and "after step 42" in killed.output, killed.output
    monkeypatch.setattr(estimators, "elbo", real)
    run = tmp_path / "b" / "quickstart" / "version_0"
    assert vae("train", "--resume", run).exit_code == 0
    a = (tmp_path / "a" / "quickstart" / "version_0" / "metrics.csv").read_text().splitlines()
    b = (run / "metrics.csv").read_text().splitlines()
    assert len(a) > 8 and [y for x, y in zip(a, b, strict=True) if x != y] == []
