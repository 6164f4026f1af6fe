"""training/evaluate.py: `vae eval` end to end: the IW bound and active units of trained one- and
two-layer models; bad settings are one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vae_cli.training.module import VAEModule

torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared CPU


# ---------------------------------------------------------------- end to end on digits
def metrics(run: Path) -> list[dict[str, str]]:
    import csv

    return list(csv.DictReader((run / "metrics.csv").open()))


@pytest.mark.slow
def test_iwae_trains_and_eval_reports_iw_elbo_and_active_units(cli, tmp_path: Path) -> None:
    r = cli("train", "--objective", "iwae", "--k", "5", "--epochs", "4", "--latent-dim", "8",
            "--hidden-dim", "64", "--batch-size", "50", "--runs-dir", "runs", "--seed", "1")  # fmt: skip
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "digits-bernoulli" / "version_0"  # DATASET-LIKELIHOOD without -e
    iw = [float(row["train/iw_epoch"]) for row in metrics(run) if row.get("train/iw_epoch")]
    assert len(iw) == 4 and iw[-1] > iw[0] + 5, iw  # the IW bound (the objective) went up

    r = cli("eval", str(run), "--iw-samples", "50", "--chunk", "7", "--seed", "3")
    assert r.exit_code == 0, r.output
    res = json.loads((run / "eval.json").read_text())
    assert res["n_examples"] == 360 and res["iw_samples"] == 50
    assert res["iw"] >= res["elbo"] - 3 * res["elbo_stderr"]
    assert "binarised once" in res["data_protocol"] and res["peak_rss_mib"] > 0
    # active units against a direct computation over the same test images
    module = VAEModule.load_from_checkpoint(str(run / "checkpoints" / "best.ckpt")).eval()
    from vae_cli.data.datamodule import VAEDataModule

    dm = VAEDataModule(module.cfg)
    dm.setup("test")
    with torch.no_grad():
        mu = module.vae.posterior(dm.splits["test"]).mean.double()
    active = int((mu.var(0, unbiased=False) > 0.01).sum())
    assert res["active_units"] == active and res["active_units_per_layer"] == [active]
    assert "active units" in r.output and "IW bound (K=50)" in r.output


@pytest.mark.slow
def test_two_stochastic_layers_train_eval_and_sample(cli, tmp_path: Path) -> None:
    r = cli("train", "--stochastic-layers", "2", "--objective", "iwae", "--k", "3", "--epochs", "1",
            "--latent-dim", "4", "--hidden-dim", "32", "--runs-dir", "runs")  # fmt: skip
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "digits-bernoulli" / "version_0"  # DATASET-LIKELIHOOD without -e
    module = VAEModule.load_from_checkpoint(str(run / "checkpoints" / "last.ckpt"))
    assert module.vae.layer_dims == (8, 4)  # z1 = 2 * latent_dim, z2 = latent_dim
    r = cli("eval", str(run), "--iw-samples", "20")
    assert r.exit_code == 0, r.output
    res = json.loads((run / "eval.json").read_text())
    assert res["latent_dims"] == [8, 4] and len(res["active_units_per_layer"]) == 2
    assert math.isfinite(res["iw"]) and math.isfinite(res["elbo"])
    r = cli("sample", str(run), "--n", "16", "--out", "s.png")
    assert r.exit_code == 0 and (tmp_path / "s.png").stat().st_size > 0, r.output


def test_bad_k_on_the_command_line_is_one_line(cli) -> None:
    r = cli("train", "--k", "0", "--runs-dir", "runs")
    assert r.exit_code == 2
    assert "k must be >= 1" in r.output and "Traceback" not in r.output
