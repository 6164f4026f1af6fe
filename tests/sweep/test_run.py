"""sweep/run.py: `vae sweep` and `vae compare --run` plan and run a sweep directory. Launch
settings are checked up front, the grid comes from an experiment's `sweep:` block and --grid,
failed members make the sweep exit 1 after its report, and a re-run skips finished members
and refuses a different sweep in the same folder."""

from __future__ import annotations

import csv
import json
import os

import pytest
from conftest import SWEEP_TINY, run_sweep

from vae_cli.errors import VaeError
from vae_cli.settings import RunSettings, resolve
from vae_cli.sweep.run import grid_from


def test_slurm_flags_need_the_slurm_launcher(cli):
    result = cli("sweep", "--slurm-partition", "gpu", "--out", "s")
    assert result.exit_code == 2 and "--slurm-* options apply to --launcher slurm only" in result.output


def test_several_nodes_are_left_to_slurm_to_start(tmp_path):
    from vae_cli.sweep.run import Launch

    Launch("slurm").check_hardware(RunSettings(num_nodes=2))  # SLURM starts the nodes: no error
    with pytest.raises(VaeError, match="needs a launcher"):
        Launch("local").check_hardware(RunSettings(num_nodes=2))


def test_experiment_sweep_block_and_command_line_grid(tmp_path, monkeypatch):
    exps = tmp_path / "experiments.yaml"
    exps.write_text(
        "experiments:\n  small:\n    dataset: digits\n    latent_dim: 2\n"
        "    sweep:\n      likelihood: [bernoulli, gaussian]\n      beta: [0.5, 1]\n      seeds: [3, 4]\n"
    )
    monkeypatch.setenv("VAE_EXPERIMENTS", str(exps))
    assert grid_from("small", [], None) == (
        {"likelihood": ["bernoulli", "gaussian"], "beta": [0.5, 1]},
        [3, 4],
    )
    # --grid replaces one key of the block, --seeds its seeds
    assert grid_from("small", ["beta=2"], "7") == (
        {"likelihood": ["bernoulli", "gaussian"], "beta": [2]},
        [7],
    )
    assert resolve("small", None, {}).latent_dim == 2  # the block is no setting of the run itself


def test_compare_refuses_the_same_run_twice(cli, tmp_path):
    (tmp_path / "r").mkdir()
    result = cli("compare", "--run", "r", "--run", "./r", "--out", "c")
    assert result.exit_code == 2 and "--run r is given twice: pass each run once" in result.output, (
        result.output
    )
    assert not (tmp_path / "c").exists()


def test_failed_members_make_the_sweep_exit_1_after_the_table(cli, tmp_path):
    # --devices beyond this machine's cores passes validation and fails when the member starts
    cores = os.cpu_count() or 1
    devices = f"{cores + 1},{cores + 2}"
    result = cli("sweep", "--grid", f"devices={devices}", *SWEEP_TINY, "--set", "max_steps=1", "--out", "s")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: 2 of 2 members failed: devices=")
    assert f"failed: devices={cores + 1},seed=0: --devices {cores + 1} but this machine" in result.output
    assert (tmp_path / "s" / "results.md").is_file()  # the report is still written


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_sweep_runs_two_jobs_and_a_rerun_skips_finished_members(tmp_path):
    args = ("--grid", "likelihood=bernoulli,gaussian", "--set", "max_steps=16", *SWEEP_TINY,
            "--iw-samples", "3", "--jobs", "2", "--out", "s")  # fmt: skip
    first = run_sweep(tmp_path, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    sweep = tmp_path / "s"
    names = ["likelihood=bernoulli,seed=0", "likelihood=gaussian,seed=0"]
    for name in names:
        ev = json.loads((sweep / name / "eval.json").read_text())
        assert ev["likelihood"] == name.split(",")[0].split("=")[1] and ev["iw_samples"] == 3
        assert sorted(p.name for p in (sweep / name).glob("version_*")) == ["version_0"]
        assert (sweep / "figures" / f"samples-{name}.png").stat().st_size > 0
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert [(r["likelihood"], r["n"]) for r in rows] == [("bernoulli", "1"), ("gaussian", "1")]
    stamp = (sweep / names[0] / "eval.json").stat().st_mtime_ns
    again = run_sweep(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    assert "2 finished (skipped), 0 to resume, 0 to start" in again.stdout
    assert (sweep / names[0] / "eval.json").stat().st_mtime_ns == stamp
    other = run_sweep(tmp_path, "--grid", "likelihood=bernoulli", "--out", "s")
    assert other.returncode == 2 and "holds another sweep (grid" in other.stderr
