"""training/guards.py: NaNs and infinities stop (or skip) training and never reach a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import EXPERIMENTS
from typer.testing import CliRunner

from vae_cli.cli import app
from vae_cli.model import estimators

EPOCHS, BATCH = 4, 10
TRAIN = ("train", "--experiment", "quickstart", "--epochs", str(EPOCHS), "--batch-size", str(BATCH))


def last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def train_in_process(tmp_path: Path, *args: str):
    runner = CliRunner(env={"VAE_EXPERIMENTS": str(EXPERIMENTS)})
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


@pytest.mark.slow
def test_nan_stops_and_keeps_the_last_good_checkpoint(nan_at_step_30, tmp_path: Path):
    result = train_in_process(tmp_path)
    message = "non-finite loss (nan) at step 30 (epoch 1): training stopped before the update"
    assert_stopped_with_epoch_0_kept(result, message, tmp_path)


@pytest.mark.slow
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
    from vae_cli.training.checkpointing import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    before = path.read_bytes()
    with pytest.raises(VaeError, match="non-finite weights in w"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan")])}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("mode", "skip_grad_norm"), [("skip", 0.0), ("stop", 1000.0), ("skip", 1000.0)],
    ids=["skip-finiteness-check", "stop-norm-check", "skip-norm-check"],
)  # fmt: skip
def test_guard_catches_a_nonfinite_gradient_behind_a_finite_loss(mode: str, skip_grad_norm: float):
    """Where the guard reads the gradients (skip mode, or a norm threshold) one NaN among
    many is caught before the update; a large finite norm is skipped in either mode."""
    from vae_cli.training.guards import NonFiniteError, NonFiniteGuard

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


@pytest.mark.slow
def test_nan_gradient_behind_a_finite_loss_stops_at_the_next_step(nan_gradient_at_step_30, tmp_path: Path):
    """The default guard reads only the loss: the NaN gradient reaches the weights in memory,
    the next loss is NaN, and training stops there with the last good checkpoint kept."""
    result = train_in_process(tmp_path)
    message = "non-finite loss (nan) at step 31 (epoch 1) (the weights were already non-finite"
    assert_stopped_with_epoch_0_kept(result, message, tmp_path)
