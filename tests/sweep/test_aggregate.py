"""sweep/aggregate.py: `vae results` aggregates a sweep's members over seeds (mean, sample std)
from their files alone, and lists failed and damaged members while reporting the rest."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml


def fake_sweep(root: Path, values: dict[tuple[str, int], float]) -> None:
    """A sweep directory whose members' eval.json hold the given ELBOs (other numbers derived)."""
    members = []
    for (lik, seed), elbo in values.items():
        name = f"likelihood={lik},seed={seed}"
        members.append({"name": name, "settings": {"likelihood": lik, "seed": seed}})
        d = root / name
        d.mkdir(parents=True)
        ev = {"elbo": elbo, "iw": elbo + 1.5, "bpd_elbo": -elbo / 100, "bpd_iw": -(elbo + 1.5) / 100,
              "recon": elbo - 2.0, "kl": 2.0 + seed, "active_units": seed, "latent_dims": [4],
              "n_examples": 360, "wall_time_s": 0.1, "run_dir": str(d / "version_0")}  # fmt: skip
        (d / "eval.json").write_text(json.dumps(ev))
    failed = root / "likelihood=gaussian,seed=2"
    failed.mkdir()
    (failed / "error.txt").write_text("refusing to write last.ckpt: non-finite weights in decoder.0\n")
    members.append({"name": failed.name, "settings": {"likelihood": "gaussian", "seed": 2}})
    record = {"grid": {"likelihood": ["bernoulli", "gaussian"]}, "seeds": [0, 1, 2], "iw_samples": 7,
              "config": {"dataset": "digits", "latent_dim": 4}, "members": members}  # fmt: skip
    (root / "sweep.yaml").write_text(yaml.safe_dump(record))


def test_results_aggregate_over_seeds_and_list_failures(cli, tmp_path):
    elbos = {("bernoulli", 0): -40.0, ("bernoulli", 1): -42.5, ("bernoulli", 2): -41.0,
             ("gaussian", 0): -700.0, ("gaussian", 1): -650.0}  # fmt: skip
    fake_sweep(tmp_path / "s", elbos)
    result = cli("results", "s")
    assert result.exit_code == 0, result.output
    assert "failed: likelihood=gaussian,seed=2: refusing to write last.ckpt" in result.output
    rows = {r["likelihood"]: r for r in csv.DictReader((tmp_path / "s" / "results.csv").open())}
    for lik, n in (("bernoulli", 3), ("gaussian", 2)):
        xs = np.array([v for (k, _), v in elbos.items() if k == lik])
        assert int(rows[lik]["n"]) == n
        assert float(rows[lik]["elbo_mean"]) == pytest.approx(xs.mean())
        assert float(rows[lik]["elbo_std"]) == pytest.approx(xs.std(ddof=1))
        assert float(rows[lik]["iw_nll_mean"]) == pytest.approx(-(xs + 1.5).mean())
        assert float(rows[lik]["kl_mean"]) == pytest.approx(2.0 + statistics.fmean(range(n)))
    md = (tmp_path / "s" / "results.md").read_text()
    assert "| bernoulli | 3 | -41.17 ± 1.26 |" in md  # mean and sample std of -40, -42.5, -41
    assert "`likelihood=gaussian,seed=2`: failed: refusing to write" in md
    members = list(csv.DictReader((tmp_path / "s" / "members.csv").open()))
    assert [m["state"] for m in members].count("failed") == 1 and len(members) == 6
    payload = json.loads((tmp_path / "s" / "results.json").read_text())
    assert payload["iw_samples"] == 7 and len(payload["rows"]) == 2
    assert (tmp_path / "s" / "figures" / "nll.png").stat().st_size > 0
    bad = cli("results", ".")
    assert bad.exit_code == 2 and "has no sweep.yaml" in bad.output


@pytest.mark.parametrize(
    "damage", ["not json{", "{}", "[1, 2]", '{"elbo": "x", "bpd_elbo": 1, "recon": 1, "kl": 1}']
)
def test_results_list_a_damaged_member_as_failed_and_report_the_rest(cli, tmp_path, damage):
    elbos = {("bernoulli", 0): -40.0, ("bernoulli", 1): -42.0, ("gaussian", 0): -700.0}
    fake_sweep(tmp_path / "s", elbos)
    (tmp_path / "s" / "likelihood=bernoulli,seed=0" / "eval.json").write_text(damage)
    result = cli("results", "s")
    assert result.exit_code == 0, result.output
    assert (
        "failed: likelihood=bernoulli,seed=0: " in result.output and "eval.json is damaged" in result.output
    )
    rows = {r["likelihood"]: r for r in csv.DictReader((tmp_path / "s" / "results.csv").open())}
    assert int(rows["bernoulli"]["n"]) == 1 and float(rows["bernoulli"]["elbo_mean"]) == -42.0
    assert int(rows["gaussian"]["n"]) == 1 and float(rows["gaussian"]["elbo_mean"]) == -700.0


@pytest.mark.parametrize(("width", "layout"), [(60, "blocks"), (80, "blocks"), (170, "bare"), (200, "boxed")])
def test_the_console_table_never_cuts_a_number_or_a_name(width: int, layout: str, tmp_path: Path):
    """At any terminal width every number is shown whole on one line (a number cut to "…", or
    a column dropped at the edge, is a wrong or missing number) and a long run path is folded,
    never shortened: boxed when it fits, then without borders, then one block per setting."""
    from rich.console import Console

    from vae_cli.sweep import aggregate

    long_run = "runs/a-rather-long-experiment-name/version_12"
    results = [
        aggregate.MemberResult(f"m{seed}", {"run": long_run, "likelihood": "continuous-bernoulli",
                                            "seed": seed}, aggregate.FINISHED, "",
                               {"elbo": -1234.5678 - seed, "iw_nll": 1230.125 + seed, "bpd_elbo": 1.23456,
                                "bpd_iw": 1.22222, "kl": 25.5, "active_units": 17})
        for seed in (0, 1)
    ]  # fmt: skip
    rows = aggregate.aggregate(results)
    with open(tmp_path / "out.txt", "w") as sink:
        console = Console(width=width, record=True, file=sink)
        console.print(aggregate.rich_table(rows, "t", console.width))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
    for cell in aggregate.table_cells(rows)[1][0][len(aggregate.setting_keys(rows)) :]:
        assert cell in text, (cell, text)  # "-1235.07 ± 0.71": whole, on one line
    if layout == "blocks":
        assert long_run in "".join(text.split())  # folded at most
    else:
        assert long_run in text and "continuous-bernoulli" in text  # names whole, never split
    assert ("┃" in text, "─" in text) == {
        "boxed": (True, True),
        "bare": (False, True),
        "blocks": (False, False),
    }[layout]
