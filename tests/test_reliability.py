"""Issue 12, class A: no run is lost, misplaced or overwritten; class C: checkpoints never run code.

One tiny trained run (module-scoped) is shared; tests that change a run work on a copy.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml
from conftest import EXPERIMENTS
from typer.testing import CliRunner

from vae_cli.cli import app

STEPS = 30  # quickstart: 26 steps per epoch, so the run ends 4 steps into its second epoch


def vae(*args: object):
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


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/quickstart/version_0, stopped by --max-steps 30 (mid-epoch)."""
    runs = tmp_path_factory.mktemp("reliability") / "runs"
    result = vae("train", "-e", "quickstart", "--max-steps", STEPS, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    return runs / "quickstart" / "version_0"


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "runs" / "quickstart" / "version_0"
    shutil.copytree(trained, dst)
    return dst


# ---------------------------------------------------------------------------- the end of a run
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


# ---------------------------------------------------------------------------- a run is its directory
def test_resume_of_a_moved_run_writes_only_inside_it(run_copy: Path):
    runs = run_copy.parent.parent
    other = runs / "quickstart" / "version_1"  # another run, where the moved one used to point
    shutil.copytree(run_copy, other)
    moved = runs / "archive" / "version_1"
    moved.parent.mkdir()
    run_copy.rename(moved)  # `mv R/quickstart/version_0 R/archive/version_1`
    untouched = snapshot(other)
    result = vae("train", "--resume", moved, "--max-steps", 40)
    assert result.exit_code == 0, result.output
    assert snapshot(other) == untouched  # byte for byte, and not even touched
    assert ckpt(moved)["global_step"] == 40
    assert sorted(p.name for p in runs.iterdir()) == ["archive", "quickstart"]
    assert sorted(p.name for p in (runs / "quickstart").iterdir()) == ["version_1"]
    assert "39" in [r.split(",")[1] for r in (moved / "metrics.csv").read_text().splitlines()]


@pytest.mark.parametrize(
    "name", ["../../x", "/tmp/x", "a/b", "..", ".hidden", "a\\b", "", " ", "a b", "a\nb", "a\tb", "x*"]
)
def test_experiment_names_cannot_escape_the_runs_dir(name: str, tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"experiment": name}))
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    line = one_line_error(vae("train", "--config", cfg, "--runs-dir", tmp_path / "runs"))
    assert "is not a plain folder name" in line
    assert not (tmp_path / "runs").exists()
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before


def test_experiments_file_names_cannot_escape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "e.yaml").write_text("experiments:\n  ../up:\n    epochs: 1\n")
    monkeypatch.setenv("VAE_EXPERIMENTS", str(tmp_path / "e.yaml"))
    result = CliRunner().invoke(app, ["train", "-e", "../up", "--runs-dir", str(tmp_path / "r")])
    assert "is not a plain folder name" in one_line_error(result)


def test_a_checkpoint_from_another_model_is_refused(run_copy: Path):
    state = ckpt(run_copy)
    state["hyper_parameters"]["config"]["likelihood"] = "gaussian"
    for name in ("best.ckpt", "last.ckpt"):
        torch.save(state, run_copy / "checkpoints" / name)
    before = snapshot(run_copy)
    line = one_line_error(vae("train", "--resume", run_copy, "--max-steps", 40))
    assert "does not belong to" in line and "its likelihood is 'gaussian'" in line
    assert "says 'bernoulli'" in line
    assert snapshot(run_copy) == before
    for command in ("sample", "eval", "reconstruct"):
        assert "likelihood is 'gaussian'" in one_line_error(vae(command, run_copy))
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


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(umask: int, tmp_path: Path):
    from vae_cli import runs
    from vae_cli.training.checkpointing import AtomicCheckpointIO

    old = os.umask(umask)
    try:
        runs.write_atomic(tmp_path / "eval.json", "{}\n")
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(1)}}, tmp_path / "c.ckpt")
        (tmp_path / "plain.txt").write_text("x")  # what open() gives: the reference
    finally:
        os.umask(old)
    mode = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask
    assert (tmp_path / "eval.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "c.ckpt").stat().st_mode & 0o777 == mode


# ---------------------------------------------------------------------------- readers never overwrite
def test_sample_and_reconstruct_never_replace_the_runs_files(run_copy: Path):
    before = snapshot(run_copy)
    for args in (["sample", run_copy], ["sample", run_copy], ["sample", run_copy, "--stochastic"],
                 ["reconstruct", run_copy], ["reconstruct", run_copy]):  # fmt: skip
        result = vae(*args)
        assert result.exit_code == 0, result.output
    after = snapshot(run_copy)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed
    new = sorted(set(after) - set(before))
    assert new == [
        "reconstructions-mean-1.png",
        "reconstructions-mean.png",
        "samples-mean-seed0-T1-n64-1.png",
        "samples-mean-seed0-T1-n64.png",
        "samples-stochastic-seed0-T1-n64.png",
    ]


def test_eval_keeps_one_file_per_setting(run_copy: Path):
    import json

    assert vae("eval", run_copy, "-k", 2).exit_code == 0
    assert vae("eval", run_copy, "-k", 3, "--seed", 1).exit_code == 0
    a = json.loads((run_copy / "eval-test-best-k2-seed0.json").read_text())
    b = json.loads((run_copy / "eval-test-best-k3-seed1.json").read_text())
    latest = json.loads((run_copy / "eval.json").read_text())
    assert (a["iw_samples"], a["seed"], b["iw_samples"], b["seed"]) == (2, 0, 3, 1)
    assert latest == b


# ---------------------------------------------------------------------------- signals
def signal_during(monkeypatch: pytest.MonkeyPatch, module, name: str, sig: int) -> None:
    """Send `sig` to this process the first time module.name is called (mid-command)."""
    real = getattr(module, name)

    def wrapped(*a, **k):
        os.kill(os.getpid(), sig)
        return real(*a, **k)

    monkeypatch.setattr(module, name, wrapped)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("command", ["eval", "sample", "reconstruct"])
def test_a_killed_command_exits_nonzero_and_writes_nothing(
    command: str, sig: int, run_copy: Path, monkeypatch: pytest.MonkeyPatch
):
    from vae_cli.model import estimators
    from vae_cli.training import reconstruct, sample

    target = {"eval": (estimators, "iw_bound"), "sample": (sample, "sample_images"),
              "reconstruct": (reconstruct, "reconstruction_pair")}[command]  # fmt: skip
    (run_copy / "eval.json").write_text('{"old": true}\n')
    before = snapshot(run_copy)
    signal_during(monkeypatch, *target, sig)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    result = vae(command, run_copy, *(["-k", "2"] if command == "eval" else []))
    assert result.exit_code == 128 + sig, result.output
    assert f"interrupted by {signal.Signals(sig).name}" in result.output
    assert "Traceback" not in result.output
    assert snapshot(run_copy) == before  # no new, half-written or replaced file
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # restored


# ---------------------------------------------------------------------------- class C
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


def test_running_means_resume_adds_in_the_uninterrupted_order():
    """A window's sums saved after `cut` of 10 batches and restored give the bits of the
    uninterrupted window: the saved state keeps the unsummed batches apart, so the additions
    are grouped as without the interruption (float addition is not associative: summing the
    pending batches at the save changed the result in 34 of these 90 cases)."""
    import io

    from vae_cli.training.fastpath import RunningMeans

    differ = []
    for cut in range(1, 10):
        for seed in range(10):
            gen = torch.Generator().manual_seed(seed * 10 + cut)
            batches = [{"elbo": -100 * torch.rand(50, generator=gen) - 1e3} for _ in range(10)]
            whole, before, after = (RunningMeans(["elbo"]) for _ in range(3))
            for b in batches:
                whole.update(b)
            for b in batches[:cut]:
                before.update(b)
            buf = io.BytesIO()
            torch.save(before.state_dict(), buf)  # through a checkpoint, as on resume
            buf.seek(0)
            after.load_state_dict(torch.load(buf, weights_only=True), torch.device("cpu"))
            for b in batches[cut:]:
                after.update(b)
            (s1, n1), (s2, n2) = whole.take(), after.take()
            assert n1 == n2 == 500
            if s1.item() != s2.item():  # bit for bit, not approximately
                differ.append((cut, seed))
    assert differ == []
