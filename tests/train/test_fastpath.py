"""The fast training path keeps the semantics: logged means are exact per-example means, the
prior's KL and the binarisation are what they replace, and --compile trains."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vae_cli.config import Config
from vae_cli.data.support import to_unit_support
from vae_cli.model import estimators
from vae_cli.model.priors import StandardNormal
from vae_cli.train import fit as training
from vae_cli.train import schedules
from vae_cli.train.fastpath import RunningMeans, ThrottledRichProgressBar
from vae_cli.train.load import load_module


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


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


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
                 hidden_dim=32, log_every_n_steps=every, runs_dir=str(tmp_path),
                 accelerator="cpu")  # fmt: skip
    run_dir = training.fit(cfg.validate())
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


def test_standard_normal_kl_equals_the_generic_normal_kl():
    torch.manual_seed(0)
    q = Independent(Normal(torch.randn(64, 8) * 3, torch.rand(64, 8) * 2 + 0.01), 1)
    fast = kl_divergence(q, Independent(StandardNormal.of(8, torch.device("cpu")), 1))
    generic = kl_divergence(q, Independent(Normal(torch.zeros(8), torch.ones(8)), 1))
    torch.testing.assert_close(fast, generic, rtol=1e-5, atol=1e-5)
    # and its log_prob is the standard normal's
    z = torch.randn(5, 8)
    torch.testing.assert_close(StandardNormal.of(8, z.device).log_prob(z), Normal(0.0, 1.0).log_prob(z))


def test_binarisation_draws_bernoulli_pixel_over_255():
    """Every grey level k is 1 with frequency k/255 (binomial tolerance), 0 never, 255 always."""
    levels = torch.arange(256, dtype=torch.uint8)
    n = 4000
    x = levels.repeat(n, 1)
    g = torch.Generator().manual_seed(0)
    freq = to_unit_support(x, "binary", "dynamic", generator=g).mean(0).double()
    p = levels.double() / 255
    sd = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 5 * sd + 1e-12).all()
    assert freq[0] == 0 and freq[255] == 1


def compile_unavailable() -> str | None:
    try:
        import torch._dynamo
        import torch._inductor
    except Exception as e:  # pragma: no cover - depends on the torch build
        return f"torch.compile is not importable here ({type(e).__name__})"
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python/platform"
    return None


@pytest.mark.skipif(compile_unavailable() is not None, reason=str(compile_unavailable()))
def test_compile_trains_a_few_steps(tmp_path: Path, monkeypatch):
    """--compile goes through torch.compile: dynamo captures the ELBO and AOTAutograd its
    backward, and training runs on the result. The test uses the aot_eager backend: inductor's
    C++ code generation takes ~20-40 s on 2 cores, and `make bench` runs the real thing."""
    from torch._dynamo.utils import counters

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend="aot_eager"))
    counters.clear()
    cfg = Config(experiment="compiled", dataset="digits", batch_size=50, max_steps=3, latent_dim=4,
                 hidden_dim=32, runs_dir=str(tmp_path), accelerator="cpu", compile=True)  # fmt: skip
    run_dir = training.fit(cfg.validate())
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured the ELBO, not a no-op
    rows = read_rows(run_dir / "metrics.csv")
    assert int(rows[-1]["step"]) >= 2 or any(r.get("train/elbo_epoch") for r in rows)
    module = load_module(run_dir / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(p).all() for p in module.parameters())


# ---------------------------------------------------------------- several steps per Lightning batch
def small_run(tmp_path: Path, name: str, **overrides) -> Config:
    values = dict(experiment=name, dataset="digits", batch_size=50, epochs=2, latent_dim=4,
                  hidden_dim=32, log_every_n_steps=4, runs_dir=str(tmp_path), accelerator="cpu")  # fmt: skip
    return Config(**{**values, **overrides}).validate()


def test_steps_per_call_changes_speed_not_training(tmp_path: Path):
    """With static binarisation the only random draws are the z noise, drawn once per step in
    the same order whatever steps_per_call is: 1 step or 4 steps per training_step must give
    the same weights and the same metrics.csv, row for row."""
    runs = {
        s: training.fit(small_run(tmp_path, f"s{s}", binarize="static", steps_per_call=s)) for s in (1, 4)
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


def test_max_steps_stops_inside_a_multi_step_batch(tmp_path: Path):
    run_dir = training.fit(small_run(tmp_path, "maxsteps", max_steps=10, steps_per_call=8))
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 10


class LearningRates(pl.Callback):
    """(epoch, lr) of every optimiser step, read just before the update."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        self.seen.append((trainer.current_epoch, optimizer.param_groups[0]["lr"]))


def test_epoch_schedule_is_stepped_and_survives_a_resume(tmp_path: Path):
    """Manual optimisation leaves the scheduler to the module: the IWAE schedule's rate must be
    lr * 10^(-i/7) in every epoch of stage i (epoch 0: i=0; 1-3: i=1; 4: i=2), also after a
    resume at an epoch boundary."""
    cfg = small_run(tmp_path, "sched", schedule="iwae", epochs=2)
    first = LearningRates()
    run_dir = training.fit(cfg, callbacks=[first])
    resumed = LearningRates()
    training.fit(dataclasses.replace(cfg, epochs=5), resume=run_dir, callbacks=[resumed])
    seen = first.seen + resumed.seen
    assert sorted({e for e, _ in seen}) == [0, 1, 2, 3, 4]
    for epoch, lr in seen:
        assert lr == pytest.approx(cfg.lr * schedules.iwae_lr_factor(epoch), rel=1e-9), epoch
    assert schedules.iwae_lr_factor(4) < schedules.iwae_lr_factor(1) < 1.0  # three stages seen


def test_progress_bar_counts_optimiser_steps(tmp_path: Path):
    """The bar's total is the epoch's optimiser steps (26), not Lightning's batches (4)."""
    seen: list[tuple[float, int]] = []

    class Total(pl.Callback):
        def on_train_epoch_end(self, trainer, module) -> None:
            bar = trainer.progress_bar_callback
            assert isinstance(bar, ThrottledRichProgressBar)
            seen.append((bar.total_train_batches, trainer.num_training_batches))

    training.fit(small_run(tmp_path, "bar", epochs=1, steps_per_call=8), callbacks=[Total()])
    assert seen == [(math.ceil((1797 - 360 - 180) / 50), 4)]
