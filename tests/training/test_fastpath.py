"""training/fastpath.py and the several-steps-per-batch module: logged means are exact per-example
means, steps_per_call changes speed not training, max_steps and the progress bar count steps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import cpu, read_rows, small_run

from vae_cli.config import Config
from vae_cli.model import estimators
from vae_cli.training import fit as training
from vae_cli.training.fastpath import RunningMeans, ThrottledRichProgressBar


def test_running_means_are_means_over_examples_not_batches():
    torch.manual_seed(0)
    acc = RunningMeans(("a", "b"))
    batches = [{"a": torch.randn(n), "b": torch.rand(n) * 100} for n in (7, 50, 3)]  # uneven
    for b in batches:
        acc.update(b)
    sums, count = acc.take()
    means = acc.means(sums, count)
    for name in ("a", "b"):
        direct = torch.cat([b[name].double() for b in batches]).mean()
        assert means[name].item() == pytest.approx(direct.item(), rel=1e-6, abs=1e-6)
    assert count == 60
    assert acc.take() is None  # take() starts afresh


@pytest.mark.slow
def test_logged_training_means_equal_a_direct_computation(tmp_path: Path, monkeypatch):
    """Record every training step's per-example ELBO terms, then recompute each logged value:
    a step log is the mean over the examples since the previous log (within the epoch), an
    epoch log the mean over the epoch's examples."""
    records: list[dict[str, torch.Tensor]] = []
    real_elbo = estimators.elbo

    def recording_elbo(vae, x, **kwargs):
        out = real_elbo(vae, x, **kwargs)
        if vae.training:  # validation runs in eval mode
            records.append({k: v.detach().double().clone() for k, v in out.items()})
        return out

    monkeypatch.setattr(estimators, "elbo", recording_elbo)
    every, batch = 4, 50
    cfg = Config(experiment="fastlog", dataset="digits", batch_size=batch, epochs=2, latent_dim=4,
                 hidden_dim=32, log_every_n_steps=every)  # fmt: skip
    run_dir = training.fit(cfg.validate(), run=cpu(tmp_path))
    per_epoch = math.ceil((1797 - 360 - 180) / batch)  # digits: 360 test, 180 val examples
    assert len(records) == 2 * per_epoch
    dims_ln2 = 64 * math.log(2)

    def mean(name: str, lo: int, hi: int) -> float:
        return torch.cat([r[name] for r in records[lo:hi]]).mean().item()

    rows = read_rows(run_dir / "metrics.csv")
    step_rows = [r for r in rows if r.get("train/elbo_step")]
    epoch_rows = [r for r in rows if r.get("train/elbo_epoch")]
    assert len(step_rows) == len([s for s in range(2 * per_epoch) if (s + 1) % every == 0])
    assert len(epoch_rows) == 2
    last_logged = -1
    for r in step_rows:
        step, epoch = int(r["step"]), int(r["epoch"])
        assert (step + 1) % every == 0 and step // per_epoch == epoch
        start = max(last_logged + 1, epoch * per_epoch)
        for name in ("elbo", "recon", "kl"):
            assert float(r[f"train/{name}_step"]) == pytest.approx(mean(name, start, step + 1), rel=1e-5)
        bpd = -mean("elbo", start, step + 1) / dims_ln2
        assert float(r["train/bpd_step"]) == pytest.approx(bpd, rel=1e-5)
        last_logged = step
    for r in epoch_rows:
        e = int(r["epoch"])
        lo, hi = e * per_epoch, (e + 1) * per_epoch
        for name in ("elbo", "recon", "kl"):
            assert float(r[f"train/{name}_epoch"]) == pytest.approx(mean(name, lo, hi), rel=1e-5)
        assert float(r["train/bpd_epoch"]) == pytest.approx(-mean("elbo", lo, hi) / dims_ln2, rel=1e-5)


# ---------------------------------------------------------------- several steps per Lightning batch


@pytest.mark.slow
def test_steps_per_call_changes_speed_not_training(tmp_path: Path):
    """With static binarisation the only random draws are the z noise, drawn once per step in
    the same order whatever steps_per_call is: 1 step or 4 steps per training_step must give
    the same weights and the same metrics.csv, row for row."""
    runs = {
        s: training.fit(small_run(tmp_path, f"s{s}", binarize="static", steps_per_call=s), run=cpu(tmp_path))
        for s in (1, 4)
    }
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in runs.values())
    assert a["global_step"] == b["global_step"] == 2 * math.ceil((1797 - 360 - 180) / 50)
    for (name, p), q in zip(a["state_dict"].items(), b["state_dict"].values(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    rows_a, rows_b = (read_rows(r / "metrics.csv") for r in runs.values())
    assert [(r["epoch"], r["step"]) for r in rows_a] == [(r["epoch"], r["step"]) for r in rows_b]
    for x, y in zip(rows_a, rows_b, strict=True):
        logged = [k for k in x if k.startswith(("train/", "val/")) and x[k]]
        assert logged == [k for k in y if k.startswith(("train/", "val/")) and y[k]]
        assert [float(y[k]) for k in logged] == pytest.approx([float(x[k]) for k in logged], rel=1e-5)


@pytest.mark.slow
def test_max_steps_stops_inside_a_multi_step_batch(tmp_path: Path):
    run_dir = training.fit(small_run(tmp_path, "maxsteps", max_steps=10, steps_per_call=8), run=cpu(tmp_path))
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 10


@pytest.mark.slow
def test_progress_bar_counts_optimiser_steps(tmp_path: Path):
    """The bar's total is the epoch's optimiser steps (26), not Lightning's batches (4)."""
    seen: list[tuple[float, int]] = []

    class Total(pl.Callback):
        def on_train_epoch_end(self, trainer, module) -> None:
            bar = trainer.progress_bar_callback
            assert isinstance(bar, ThrottledRichProgressBar)
            seen.append((bar.total_train_batches, trainer.num_training_batches))

    training.fit(
        small_run(tmp_path, "bar", epochs=1, steps_per_call=8), callbacks=[Total()], run=cpu(tmp_path)
    )
    assert seen == [(math.ceil((1797 - 360 - 180) / 50), 4)]


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
