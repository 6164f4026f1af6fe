"""sweep/launch.py: how members run. Threads are divided between local jobs; submitit's SLURM
parameters are checked before anything is written; the SLURM path end to end through
submitit's local executor."""

from __future__ import annotations

import csv
import os

import pytest
from conftest import SWEEP_TINY, run_sweep

from vae_cli.sweep import launch


def test_threads_are_divided_between_jobs():
    assert [launch.threads_per_job(n, cores=16) for n in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]
    assert launch.member_env(2)["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--slurm-time", "-5"], "timeout_min must be >= 1, got -5"),
        (["--slurm", "timeout_min=0"], "timeout_min must be >= 1, got 0"),
        (["--slurm-gpus", "-1"], "gpus_per_node must be >= 0, got -1"),
        (["--slurm", "slurm_cpus_per_task=-2"], "slurm_cpus_per_task must be >= 1"),
        (["--slurm", "mem_gb=abc"], "submitit rejected the SLURM parameters ['mem_gb']"),
        (["--slurm", "bogus_key=1"], "submitit rejected the SLURM parameters ['bogus_key']"),
        (["--slurm", "slurm_bogus=1"], "submitit rejected the SLURM parameters ['slurm_bogus']"),
        (["--slurm", "mem_gb=4", "--slurm", "mem_gb=8"], "--slurm mem_gb is given twice"),
        (
            ["--slurm-time", "5", "--slurm", "timeout_min=6"],
            "--slurm timeout_min=... repeats a --slurm-* flag",
        ),
    ],
)
def test_bad_submitit_parameters_are_refused_before_anything_is_written(cli, tmp_path, args, message):
    pytest.importorskip("submitit", reason="the [slurm] extra (submitit) is not installed")
    result = cli("sweep", "--launcher", "submitit-local", *args, "--out", "s")
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no sweep.yaml, no member folder, no submitit/


def test_no_slurm_is_refused_before_anything_is_written(cli, tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit", reason="the [slurm] extra (submitit) is not installed")
    if submitit.AutoExecutor.which() == "slurm":
        pytest.skip("this machine has SLURM")
    for args in ([], ["--slurm", "bogus_key=1"]):
        result = cli("sweep", "--launcher", "slurm", *args, "--out", "s")
        assert result.exit_code == 2 and "no SLURM on this machine" in result.output, result.output
        assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_slurm_launcher_through_submitits_local_executor(tmp_path):
    pytest.importorskip("submitit", reason="the [slurm] extra (submitit) is not installed")
    args = ("--grid", "likelihood=bernoulli,gaussian", "--set", "max_steps=8", *SWEEP_TINY,
            "--iw-samples", "2")  # fmt: skip
    result = run_sweep(tmp_path, *args, "--launcher", "submitit-local", "--jobs", "2", "--out", "s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted 2 member(s) as job array" in result.stdout
    assert list((tmp_path / "s" / "submitit").glob("*_log.out"))  # submitit's own task logs
    rows = list(csv.DictReader((tmp_path / "s" / "members.csv").open()))
    assert [r["state"] for r in rows] == ["finished", "finished"]
    # no SLURM on this machine: a one-line error, not a hang or a traceback
    no = run_sweep(tmp_path, *args, "--launcher", "slurm", "--slurm-partition", "gpu", "--out", "t")
    assert no.returncode == 2 and "no SLURM on this machine" in no.stderr, no.stderr
