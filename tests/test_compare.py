"""`vae compare` (and `vae train --smoke` for every family, 8x8 grey and 32x32 RGB) on the
offline digits with a few steps."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from vae_cli.model.likelihoods import LIKELIHOODS

TINY = ("--hidden-dim", "16", "--latent-dim", "4", "--batch-size", "8", "--accelerator", "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
@pytest.mark.parametrize("dataset,arch", [("digits", "mlp"), ("shapes32", "conv")])
def test_train_smoke_every_family(cli, name, dataset, arch):
    result = cli("train", "--dataset", dataset, "--arch", arch, "--likelihood", name, "--smoke", *TINY)
    assert result.exit_code == 0, result.output
    assert f"smoke ok: default ({dataset}, {name}, {arch})" in result.output
    elbo = float(result.output.split("test ELBO ")[1].split()[0])
    assert math.isfinite(elbo)


def test_bad_likelihood_is_one_line_error(cli):
    result = cli("compare", "--dataset", "digits", "--likelihoods", "gaussian,categorcal")
    assert result.exit_code == 2
    assert 'unknown likelihood "categorcal" (did you mean "categorical"?)' in result.output


@pytest.mark.slow
def test_compare_trains_evaluates_and_reuses_runs(cli, tmp_path: Path):
    names = ["bernoulli", "gaussian", "categorical"]
    result = cli(
        "compare", "--dataset", "digits", "--likelihoods", ",".join(names), "--max-steps", "5",
        "--latent-dim", "4", "--hidden-dim", "32", "--iw-samples", "3", "--out", "report",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = tmp_path / "report"
    # a sweep over likelihood: results.csv has one row per family (seeds aggregated),
    # members.csv one row per run
    assert [r["likelihood"] for r in csv.DictReader((report / "results.csv").open())] == names
    rows = list(csv.DictReader((report / "members.csv").open()))
    assert [r["likelihood"] for r in rows] == names
    dims = 64  # 8x8 digits
    for r in rows:
        elbo, iw = float(r["elbo"]), -float(r["iw_nll"])
        # bits/dim recomputed here: nats -> bits, plus log2(256) for densities on [0, 1]
        offset = 8.0 if r["likelihood"] == "gaussian" else 0.0
        assert float(r["bpd_elbo"]) == pytest.approx(-elbo / (dims * math.log(2)) + offset, rel=1e-6)
        assert float(r["bpd_iw"]) == pytest.approx(-iw / (dims * math.log(2)) + offset, rel=1e-6)
        assert float(r["recon"]) - float(r["kl"]) == pytest.approx(elbo, abs=1e-3)
        assert 0 <= int(r["active_units"]) <= 4 and float(r["train_wall_s"]) > 0
        assert (report / "figures" / f"samples-{r['member']}.png").stat().st_size > 0
    md = (report / "results.md").read_text()
    assert md.count("\n| ") == len(names) and "not comparable" in md  # one line per family
    # the same runs again, by directory, without training: identical test numbers
    runs_args = [a for r in rows for a in ("--run", r["run_dir"])]
    again = cli("compare", *runs_args, "--iw-samples", "3", "--out", "report2")
    assert again.exit_code == 0, again.output
    rows2 = list(csv.DictReader((tmp_path / "report2" / "members.csv").open()))
    for a, b in zip(rows, rows2, strict=True):
        assert (a["likelihood"], a["elbo"], a["iw_nll"]) == (b["likelihood"], b["elbo"], b["iw_nll"])
        assert b["train_wall_s"] == "" and Path(b["run_dir"]) == Path(a["run_dir"]).resolve()
    # two runs of one setting (a run and a copy of it) are two rows, never pooled as seeds
    copy = tmp_path / "copy"
    shutil.copytree(rows[0]["run_dir"], copy)
    pair = cli("compare", "--run", rows[0]["run_dir"], "--run", str(copy), "-k", "3", "--out", "r3")
    assert pair.exit_code == 0, pair.output
    members = list(csv.DictReader((tmp_path / "r3" / "members.csv").open()))
    assert [m["run"] for m in members] == [rows[0]["run_dir"], str(copy)]
    assert members[0]["elbo"] == members[1]["elbo"]  # the same weights, the same test numbers
    agg = list(csv.DictReader((tmp_path / "r3" / "results.csv").open()))
    assert [(a["run"], a["n"], a["elbo_std"]) for a in agg] == [
        (rows[0]["run_dir"], "1", ""),
        (str(copy), "1", ""),
    ]
    # the same run twice is a slip: one line, nothing written
    again_copy = tmp_path / "r3" / ".." / "copy"  # another spelling of the same folder
    twice = cli("compare", "--run", str(copy), "--run", str(again_copy), "-k", "3", "--out", "r4")
    assert twice.exit_code == 2 and f"--run {again_copy} is given twice" in twice.output, twice.output
    assert not (tmp_path / "r4").exists()
    # re-running the comparison trains nothing: every member is finished
    again = cli(
        "compare", "--dataset", "digits", "--likelihoods", ",".join(names), "--max-steps", "5",
        "--latent-dim", "4", "--hidden-dim", "32", "--iw-samples", "3", "--out", "report",
    )  # fmt: skip
    assert again.exit_code == 0 and "3 finished (skipped), 0 to resume, 0 to start" in again.output

    # reconstruct from one of those runs: 10 inputs -> 2 x (input row, reconstruction row)
    run_dir = rows[1]["run_dir"]
    for flag, name in (("", "reconstructions-mean.png"), ("--stochastic", "reconstructions-stochastic.png")):
        res = cli("reconstruct", run_dir, "--n", "10", *([flag] if flag else []))
        assert res.exit_code == 0, res.output
        assert name in res.output
        w, h = Image.open(Path(run_dir) / name).size
        # 2 x (input row, output row) of 8x8 cells, upscaled >= 5x, a label column and a caption
        assert w >= 400 and h > 4 * 8 * 5
    mean = torch.tensor(list(Image.open(Path(run_dir) / "reconstructions-mean.png").getdata()))
    noisy = torch.tensor(list(Image.open(Path(run_dir) / "reconstructions-stochastic.png").getdata()))
    assert not torch.equal(mean, noisy)
    bad = cli("reconstruct", run_dir, "--n", "0")
    assert bad.exit_code == 2 and "--n must be in 1..10000" in bad.output


@pytest.mark.parametrize("text", ["", "bernoulli,", "bernoulli,,gaussian"])
def test_compare_refuses_empty_likelihood_items(cli, tmp_path, text):
    result = cli("compare", "--likelihoods", text, "--out", "c")
    assert result.exit_code == 2, result.output
    assert "has an empty item" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()
