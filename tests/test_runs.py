"""runs.py: run directories. Runs started together get their own folders; names stay inside
--runs-dir; files are written atomically under the user's umask; commands that read a run
add files to it and never replace one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from conftest import one_line_error, snapshot, vae
from typer.testing import CliRunner

from vae_cli.cli import app


def test_runs_started_together_get_their_own_folders(tmp_path: Path):
    from concurrent.futures import ThreadPoolExecutor

    from vae_cli.runs import claim_version

    (tmp_path / "exp" / "version_0").mkdir(parents=True)
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda _: claim_version(tmp_path / "exp"), range(16)))
    assert sorted(versions) == list(range(1, 17))


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
