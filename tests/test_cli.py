"""cli.py: the commands' own behaviour, end to end on the offline digits. Flags and experiments
reach the run, `vae experiments` lists them, `vae eval` keeps one file per setting, a signal
ends a reading command non-zero without writing, and missing inputs are clean errors."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml
from conftest import snapshot, vae


def test_unknown_experiment_is_a_clean_error(cli):
    result = cli("train", "--experiment", "quickstrat")
    assert result.exit_code == 2
    assert 'unknown experiment "quickstrat" (did you mean "quickstart"?)' in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_flag_overrides_reach_the_run(cli, tmp_path: Path):
    result = cli("train", "--experiment", "quickstart", "--likelihood", "gaussian", "--sigma", "0.2",
                 "--max-steps", "5", "--epochs", "1", "--latent-dim", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    (cfg_path,) = tmp_path.glob("runs/quickstart/version_*/config.yaml")
    cfg = yaml.safe_load(cfg_path.read_text())
    assert (cfg["likelihood"], cfg["sigma"], cfg["latent_dim"]) == ("gaussian", 0.2, 3)


def test_experiments_lists_names(cli):
    result = cli("experiments")
    assert result.exit_code == 0
    assert "quickstart" in result.output and "mnist-bernoulli" in result.output


def test_experiments_at_80_columns_never_cut_a_name_and_show_inherited_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Names are typed: an 80-column terminal shows each whole; an experiment that takes its
    likelihood from the declared default still shows it."""
    from typer.testing import CliRunner

    from vae_cli import settings as settings_mod
    from vae_cli.cli import app

    (tmp_path / "e.yaml").write_text("experiments:\n  a-rather-long-experiment-name-here:\n    epochs: 1\n")
    monkeypatch.setenv("VAE_EXPERIMENTS", str(tmp_path / "e.yaml"))
    result = CliRunner().invoke(app, ["experiments"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "a-rather-long-experiment-name-here" in x)
    assert line.split()[1:] == [
        settings_mod.SETTINGS["dataset"].default,
        settings_mod.SETTINGS["likelihood"].default,
    ]


@pytest.mark.parametrize(("where", "problem"), [("nope.yaml", "no such file"), (".", "is a folder")])
def test_a_missing_experiments_file_is_named(
    where: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from typer.testing import CliRunner

    from vae_cli.cli import app

    monkeypatch.setenv("VAE_EXPERIMENTS", str(tmp_path / where))
    for args in (["train", "-e", "quickstart", "--smoke"], ["experiments"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "VAE_EXPERIMENTS=" in result.output and problem in result.output


def test_sample_without_any_run_is_a_clean_error(cli):
    result = cli("sample", "--n", "4")
    assert result.exit_code == 2 and "no trained run found" in result.output


# ---------------------------------------------------------------------------- reading a run


def test_eval_keeps_one_file_per_setting(run_copy: Path):
    import json

    assert vae("eval", run_copy, "-k", 2).exit_code == 0
    assert vae("eval", run_copy, "-k", 3, "--seed", 1).exit_code == 0
    a = json.loads((run_copy / "eval-test-best-k2-seed0.json").read_text())
    b = json.loads((run_copy / "eval-test-best-k3-seed1.json").read_text())
    latest = json.loads((run_copy / "eval.json").read_text())
    assert (a["iw_samples"], a["seed"], b["iw_samples"], b["seed"]) == (2, 0, 3, 1)
    assert latest == b


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
