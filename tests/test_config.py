"""Config layering and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from vae_cli.config import Config, Experiments, resolve
from vae_cli.errors import VaeError

EXPS = Experiments(
    defaults={"batch_size": 64, "lr": 0.002},
    named={"small": {"dataset": "digits", "latent_dim": 4, "batch_size": 32}},
)


def test_precedence_defaults_experiment_file_flags(tmp_path: Path):
    f = tmp_path / "over.yaml"
    f.write_text("latent_dim: 6\nepochs: 3\n")
    cfg = resolve("small", f, {"epochs": 7, "likelihood": None}, experiments=EXPS)
    assert cfg.experiment == "small"
    assert cfg.lr == 0.002  # defaults
    assert cfg.batch_size == 32  # experiment beats defaults
    assert cfg.latent_dim == 6  # file beats experiment
    assert cfg.epochs == 7  # flag beats file
    assert cfg.likelihood == Config.likelihood  # an unset flag (None) overrides nothing


def test_unknown_experiment_names_the_choices():
    with pytest.raises(VaeError, match='unknown experiment "smal" \\(did you mean "small"\\?\\)'):
        resolve("smal", experiments=EXPS)


def test_unknown_yaml_key_is_named_with_a_suggestion(tmp_path: Path):
    f = tmp_path / "bad.yaml"
    f.write_text("latnt_dim: 3\n")
    with pytest.raises(VaeError, match=r'unknown key "latnt_dim".*did you mean "latent_dim"'):
        resolve(config_file=f, experiments=EXPS)


def test_wrong_type_and_range_are_errors(tmp_path: Path):
    with pytest.raises(VaeError, match=r'"batch_size" .* must be int'):
        resolve(overrides={"batch_size": "ten"}, experiments=EXPS)
    with pytest.raises(VaeError, match="latent_dim must be >= 1"):
        resolve(overrides={"latent_dim": 0}, experiments=EXPS)
    with pytest.raises(VaeError, match='unknown likelihood "bernouli"'):
        resolve(overrides={"likelihood": "bernouli"}, experiments=EXPS)


def test_repository_experiments_file_is_valid():
    exps = Experiments.load(Path(__file__).resolve().parent.parent / "vae_cli" / "experiments.yaml")
    assert {"quickstart", "mnist-bernoulli"} <= set(exps.named)
    for name in exps.named:
        assert resolve(name, experiments=exps).experiment == name
    # one experiment per implemented likelihood
    from vae_cli.model.likelihoods import LIKELIHOODS

    used = {resolve(n, experiments=exps).likelihood for n in exps.named}
    assert set(LIKELIHOODS) <= used
