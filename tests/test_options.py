"""The CLI's options come from the settings declarations; help is clean; start-up imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vae_cli import settings
from vae_cli.cli import TRAIN_SETTINGS, app

ROOT = Path(__file__).resolve().parent.parent


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def options(command: str) -> dict[str, typer.core.TyperOption]:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params}  # type: ignore[attr-defined]


def test_train_has_one_option_per_setting_with_its_group_and_default():
    opts = options("train")
    assert set(TRAIN_SETTINGS) <= set(opts)
    assert set(opts) - set(TRAIN_SETTINGS) == {"experiment", "config_file", "smoke", "resume"}
    assert "description" in opts  # every setting but the experiment's name (-e) is a flag
    for name in TRAIN_SETTINGS:
        d = settings.SETTINGS[name]
        assert opts[name].rich_help_panel == d.spec.group, name
        assert opts[name].default == d.default, name


def test_sample_has_no_spread_flags():
    """Sampling is one decoder pass on one device: no --devices/--strategy/--num-nodes."""
    assert {"accelerator", "precision"} <= set(options("sample"))
    assert not {"devices", "strategy", "num_nodes"} & set(options("sample"))


def test_help_shows_defaults_choices_and_brackets_unmangled():
    train = " ".join(help_text("train").split())
    assert "[default: ./data]" in train and "[default: runs]" in train
    assert "elbo|iwae" in train and "logistic-mixture" in train  # choices, not <str>
    for name in ("Data", "Model", "Likelihood", "Objective", "Optimisation", "Hardware", "Output"):
        assert f" {name} " in train, name
    # No on/off flag shows a value placeholder, and no option a bare "<str>" or Python list
    # type, in any command's help (choices and free text name what they take instead).
    for command in ("", "train", "eval", "sample", "reconstruct", "latent", "compare", "sweep", "results",
                    "experiments"):  # fmt: skip
        text = help_text(command) if command else help_text()
        for bad in ("<bool>", "<str>", "<list"):
            assert bad not in text, (command, bad)
    launcher = " ".join(help_text("sweep").split())
    assert "local|slurm|submitit-local" in launcher
    sample = " ".join(help_text("sample").split())
    assert "E[x|z]" in sample and "[default: (a new RUN/samples-{mean,stochastic}-seedS-TT-nN.png)]" in sample
    eval_ = " ".join(help_text("eval").split())
    assert "[default: (the run's)]" in eval_ and "[default: (the latest run)]" in eval_


def test_version_and_completion():
    from vae_cli import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"vae-cli {__version__}"
    assert "--install-completion" in help_text()
    words = "vae train --likelihood gaussian-"
    env = {"_VAE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": "3"}
    completion = CliRunner().invoke(app, [], prog_name="vae", env=env)
    assert completion.output.split() == ["gaussian-learned", "gaussian-optimal", "gaussian-pixel"]
    # the named experiments and the fixed choices of hand-written options complete too
    for words, expected in (("vae train -e quick", ["quickstart"]), ("vae eval --split ", ["test", "val"]),
                            ("vae sweep --launcher s", ["slurm", "submitit-local"])):  # fmt: skip
        env = {"_VAE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": "3"}
        assert CliRunner().invoke(app, [], prog_name="vae", env=env).output.split() == expected, words


def test_bad_choice_on_the_command_line_is_the_one_line_error(cli):
    result = cli("train", "--objective", "iwea")
    assert result.exit_code == 2 and 'unknown objective "iwea" (did you mean "iwae"?)' in result.output


STARTUP = """
import json, sys
from typer.testing import CliRunner
from vae_cli.cli import app
codes = [CliRunner().invoke(app, args).exit_code
         for args in (["--help"], ["train", "--help"], ["eval", "--help"], ["sample", "--help"],
                      ["compare", "--help"], ["--version"], ["experiments"])]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "pytorch_lightning",
                                                            "lightning", "lightning_fabric"))
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_help_version_and_experiments_import_no_torch(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-c", STARTUP], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0] * 7
    assert report["heavy"] == []


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"]])
def test_importtime_of_help_lists_no_torch(args: list[str], tmp_path: Path):
    """The same through `python -X importtime -m vae_cli`, the measurement in the README."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "vae_cli", *args], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""},
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "vae_cli.cli" in imported and "typer" in imported
    assert not {m for m in imported if m.split(".")[0] in ("torch", "pytorch_lightning", "torchvision")}


@pytest.mark.parametrize("command", ["train", "compare", "eval", "sample", "reconstruct", "latent", "sweep"])
def test_panels_come_in_the_declared_order(command: str):
    """Data, Model, Likelihood, Objective, Optimisation, Hardware, Output, as docs/settings.md."""
    text = help_text(command)
    shown = [g for g in sorted(settings.GROUPS, key=lambda g: text.find(f"─ {g} ")) if f"─ {g} " in text]
    assert shown == [g for g in settings.GROUPS if g in shown], shown
