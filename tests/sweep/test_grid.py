"""sweep/grid.py: a sweep's grid (--grid, --seeds, an experiment's `sweep:` block) is checked
and expanded into validated members with readable folder names, before anything runs."""

from __future__ import annotations

import pytest

from vae_cli.errors import VaeError
from vae_cli.settings import RunSettings, resolve, resolve_all
from vae_cli.sweep.grid import expand, parse_grid, parse_seeds


def test_grid_members_are_validated_configs_with_readable_names():
    base, hardware = resolve_all(None, None, {"dataset": "digits"})
    grid = parse_grid(["likelihood=bernoulli,gaussian-learned", "beta=0.5,1"])
    assert grid == {"likelihood": ["bernoulli", "gaussian-learned"], "beta": [0.5, 1]}
    members = expand(base, hardware, grid, parse_seeds("0,1,2"), "--grid")
    assert len(members) == 12
    m = members[1]
    assert m.name == "likelihood=bernoulli,beta=0.5,seed=1"
    assert (m.config.likelihood, m.config.beta, m.config.seed) == ("bernoulli", 0.5, 1)
    assert isinstance(members[2].config.beta, float) and members[3].config.beta == 1.0  # coerced like YAML
    assert m.setting == "likelihood=bernoulli,beta=0.5"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--grid", "betta=0.5,1"], 'cannot sweep "betta" (did you mean "beta"?)'),
        (["--grid", "beta=0.5,abc"], '"beta" in --grid (beta=abc) must be float, got str'),
        (
            ["--grid", "likelihood=bernoulli,gausian"],
            'unknown likelihood "gausian" (did you mean "gaussian"?)',
        ),
        (["--grid", "beta=-1"], "beta must be >= 0, got -1.0"),
        (["--grid", "seed=1,2"], 'cannot sweep "seed": use --seeds for seeds'),
        (["--grid", "beta"], "write KEY=V1,V2"),
        (["--seeds", "0,x"], "seeds must be integers"),
        (["--launcher", "pbs"], 'unknown launcher "pbs"'),
        (["--jobs", "0"], "--jobs must be >= 1"),
        (["--set", "epocs=3"], 'unknown key "epocs"'),
        # equal once converted to the setting's type: one value twice, not two settings
        (["--grid", "beta=1,1.0"], "beta needs distinct values"),
        (["--grid", "latent_dim=2,2.0"], "must be int"),
        (["--grid", "beta=0.5,,1"], "has an empty value"),
        (["--grid", "beta=0.5,"], "has an empty value"),
        (["--seeds", "0,,1"], "no empty items"),
        (["--seeds", ""], "no empty items"),
        # what `vae train` refuses up front (trainer.check_hardware), refused for every member
        (["--grid", "precision=32,16-true"], 'unknown precision "16-true"'),
        (["--grid", "num_nodes=1,2"], "needs a launcher that starts the other nodes"),
        (["--grid", "experiment=a,b"], 'cannot sweep "experiment": every member of a sweep'),
        (["--grid", "name=a,b"], 'cannot sweep "name": every member of a sweep'),
        (["--grid", "runs_dir=a,b"], 'cannot sweep "runs_dir": members are written inside'),
        (["--grid", "logger=csv,tensorboard"], 'cannot sweep "logger": one logger setting'),
        (["--grid", "description=a,b"], 'cannot sweep "description": it is free text'),
    ],
)
def test_bad_grid_is_one_line_error_before_anything_runs(cli, tmp_path, args, message):
    result = cli("sweep", *args, "--out", "s")
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()
    key = args[1].split("=")[0]
    assert f'did you mean "{key}"' not in result.output  # never suggests what was typed


@pytest.mark.parametrize(
    "block,message",
    [
        ("      seeds: 3\n", "small' sweep: seeds must be a list of integers (e.g. seeds: [0, 1, 2]), got 3"),
        ("      seeds: [0, '']\n", "small' sweep: seeds must be integers separated by commas, no empty"),
        ("      seeds: [0, true]\n", "small' sweep: seeds must be integers separated by commas, no empty"),
        ("      beta: {a: 1}\n", "small' sweep: beta must be a value or a list of values, got a mapping"),
        ("      beta: [1, 1.0]\n", "beta needs distinct values"),
    ],
)
def test_bad_sweep_block_is_one_line_error(cli, tmp_path, monkeypatch, block, message):
    exps = tmp_path / "experiments.yaml"
    exps.write_text("experiments:\n  small:\n    dataset: digits\n    sweep:\n" + block)
    monkeypatch.setenv("VAE_EXPERIMENTS", str(exps))
    result = cli("sweep", "-e", "small", "--out", "s")
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_member_names_never_escape_the_sweep_directory():
    base = resolve(None, None, {})
    (m,) = expand(base, RunSettings(), {"data_dir": ["../../etc"]}, [0], "--grid")
    assert "/" not in m.name and m.name == "data_dir=.._.._etc,seed=0"
    with pytest.raises(VaeError, match="cannot sweep"):
        expand(base, RunSettings(), {"runs_dir": ["/tmp"]}, None, "--grid")
