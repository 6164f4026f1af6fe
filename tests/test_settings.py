"""The settings declaration: one generic check, registries that match it, the generated docs,
run settings kept out of checkpoints, experiments files merged."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import yaml

from vae_cli import safeyaml, settings
from vae_cli.errors import VaeError
from vae_cli.settings import Config, Experiments, RunSettings

ROOT = Path(__file__).resolve().parent.parent
HARDWARE = {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "num_nodes": 1, "precision": "16-mixed",
            "runs_dir": "elsewhere"}  # fmt: skip


def test_registries_hold_exactly_the_declared_names():
    """--help lists the names without importing torch; they must not drift from the registries."""
    import vae_cli.data  # noqa: F401  (registers the built-in datasets)
    from vae_cli.data.registry import DATASETS
    from vae_cli.model.build import STOCHASTIC_LAYERS
    from vae_cli.model.likelihoods import LIKELIHOODS
    from vae_cli.model.networks import ARCHITECTURES
    from vae_cli.training.objectives import OBJECTIVES
    from vae_cli.training.schedules import SCHEDULES

    declared = settings.SETTINGS
    assert set(declared["likelihood"].spec.choices) == set(LIKELIHOODS)
    assert set(declared["dataset"].spec.choices) == set(DATASETS)
    assert set(declared["arch"].spec.choices) == set(ARCHITECTURES)
    assert set(declared["objective"].spec.choices) == set(OBJECTIVES)
    assert set(declared["schedule"].spec.choices) == set(SCHEDULES)
    assert set(declared["stochastic_layers"].spec.choices) == set(STOCHASTIC_LAYERS)


@pytest.mark.parametrize("name", [n for n, d in settings.SETTINGS.items() if d.type is float])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_no_float_setting_accepts_nan_or_inf(name: str, bad: float):
    with pytest.raises(VaeError, match=f"{name} must be a finite number"):
        settings.check(name, bad)


@pytest.mark.parametrize(
    ("name", "good", "bad", "message"),
    [
        ("lr", 1e-9, 0.0, "lr must be > 0, got 0.0"),
        ("beta", 0.0, -0.5, "beta must be >= 0, got -0.5"),
        ("devices", -1, 0, "devices must be >= 1 (-1: all), got 0"),
        ("max_steps", -1, 0, "max_steps must be >= 1 (-1: no limit), got 0"),
        ("epochs", 1, 0, "epochs must be >= 1, got 0"),
        ("val_size", None, 0, "val_size must be >= 1, got 0"),
        ("stochastic_layers", 2, 3, 'unknown stochastic_layers "3"; choose one of: 1, 2'),
        ("precision", "bf16-mixed", "16-mix", 'unknown precision "16-mix" (did you mean "16-mixed"?)'),
    ],
)
def test_one_generic_check_for_ranges_and_choices(name, good, bad, message):
    settings.check(name, good)
    with pytest.raises(VaeError) as e:
        settings.check(name, bad)
    assert message in str(e.value)


def test_flags_and_yaml_go_through_the_same_check(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: .nan\n")
    with pytest.raises(VaeError, match="lr must be a finite number"):
        settings.resolve_all(config_file=f, experiments=Experiments())
    with pytest.raises(VaeError, match="devices must be >= 1"):
        settings.resolve_all(overrides={"devices": 0}, experiments=Experiments())


def test_every_setting_has_a_known_group_and_help():
    for d in settings.SETTINGS.values():
        assert d.spec.group in settings.GROUPS and d.spec.help.endswith("."), d.name
    hardware = {n for n, d in settings.SETTINGS.items() if d.spec.group == settings.HARDWARE}
    assert hardware == {"accelerator", "devices", "strategy", "num_nodes", "precision"}
    assert hardware | {"runs_dir", "name", "logger", "time_limit"} == set(settings.RUN_SETTINGS)
    assert not set(settings.RUN_SETTINGS) & {f for f in Config.__dataclass_fields__}


def test_docs_settings_table_is_generated_and_fresh():
    doc = (ROOT / "docs" / "settings.md").read_text()
    assert doc == settings.markdown_table(), "docs/settings.md is stale: run `python scripts/settings_doc.py`"
    for name in settings.SETTINGS:
        assert f"| `{name}` |" in doc


def test_resolve_splits_model_and_run_settings():
    exps = Experiments(named={"x": {"accelerator": "cpu", "latent_dim": 3}})
    cfg, run = settings.resolve_all("x", overrides={"devices": 2}, experiments=exps)
    assert (cfg.latent_dim, run.accelerator, run.devices) == (3, "cpu", 2)
    assert "accelerator" not in cfg.to_dict() and not hasattr(cfg, "devices")


def test_saved_config_keeps_run_settings_apart_and_they_never_come_back(tmp_path: Path):
    cfg, run = Config(latent_dim=3), RunSettings(**HARDWARE)
    recorded = settings.record(cfg, run)
    assert recorded["run"]["precision"] == "16-mixed" and "precision" not in {
        k for k in recorded if k != "run"
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(recorded))
    assert settings.from_dict(settings.read_yaml(path)) == cfg
    # a saved config.yaml works as --config; its run section is read like flat keys
    again, run_again = settings.resolve_all(config_file=path, experiments=Experiments())
    assert again == cfg and run_again == run


def test_old_configs_with_flat_hardware_keys_still_load():
    old = {**Config(hidden_dim=7).to_dict(), **HARDWARE}
    assert settings.from_dict(old) == Config(hidden_dim=7)
    with pytest.raises(VaeError, match='unknown key "hiden_dim"'):
        settings.from_dict({"hiden_dim": 7})


def test_old_checkpoint_with_hardware_hyperparameters_loads(tmp_path: Path):
    """A checkpoint written before the split carries accelerator/devices/... in its hparams."""
    import pytorch_lightning as pl

    from vae_cli.training.load import load_module
    from vae_cli.training.module import VAEModule

    cfg = Config(dataset="digits", latent_dim=3, hidden_dim=8)
    module = VAEModule(cfg.to_dict())
    assert set(module.hparams["config"]) == set(Config.__dataclass_fields__)  # nothing else stored
    old = {**cfg.to_dict(), **HARDWARE, "log_every_n_steps": 5}
    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"config": old},
                "pytorch-lightning_version": pl.__version__}, ckpt)  # fmt: skip
    loaded = load_module(ckpt)
    assert loaded.cfg == Config(dataset="digits", latent_dim=3, hidden_dim=8, log_every_n_steps=5)
    for name, value in module.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)


def test_local_experiments_merge_over_the_packaged_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("VAE_EXPERIMENTS", raising=False)
    monkeypatch.chdir(tmp_path)
    packaged = Experiments.load(settings.PACKAGED_EXPERIMENTS)
    assert settings.experiments_files() == [settings.PACKAGED_EXPERIMENTS]
    (tmp_path / "experiments.yaml").write_text(
        "defaults:\n  batch_size: 7\nexperiments:\n"
        "  quickstart:\n    dataset: digits\n    epochs: 1\n  mine:\n    latent_dim: 2\n"
    )
    merged = Experiments.load()
    assert set(merged.named) == set(packaged.named) | {"mine"}  # nothing shipped is lost
    assert merged.named["quickstart"] == {"dataset": "digits", "epochs": 1}  # replaced whole, by name
    assert merged.defaults == {**packaged.defaults, "batch_size": 7}  # defaults key by key
    assert settings.resolve("mine").latent_dim == 2
    # VAE_EXPERIMENTS names the one file to use
    only = tmp_path / "only.yaml"
    only.write_text("experiments:\n  solo: {}\n")
    monkeypatch.setenv("VAE_EXPERIMENTS", str(only))
    assert list(Experiments.load().named) == ["solo"]


def test_a_file_edited_between_two_reads_is_read_anew_and_reads_are_independent(tmp_path: Path):
    """safeyaml parses each text once; an edit within one clock tick (same size, same mtime)
    must still be seen, and a caller changing what it got must not change the next read."""
    path = tmp_path / "e.yaml"
    path.write_text("experiments:\n  a: {epochs: 1}\n")
    safeyaml.load(path)["experiments"]["a"]["epochs"] = 99
    assert Experiments.load(path).named["a"]["epochs"] == 1
    stat = path.stat()
    path.write_text("experiments:\n  a: {epochs: 2}\n")  # the same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert Experiments.load(path).named["a"]["epochs"] == 2


@pytest.mark.parametrize(
    ("text", "value"), [("1e-3", 1e-3), ("5E+2", 500.0), ("-2.5e-1", -0.25), (".5e1", 5.0)]
)
def test_exponent_notation_from_yaml_is_a_float_as_on_the_command_line(
    text: str, value: float, tmp_path: Path
):
    """PyYAML (YAML 1.1) reads `1e-3` (no dot) as a string; `--lr 1e-3` is a float, so YAML is too."""
    assert yaml.safe_load(f"x: {text}")["x"] in (text, value)  # a string without a dot: why this exists
    path = tmp_path / "c.yaml"
    path.write_text(f"beta: {text}\n")
    assert settings.layered(config_file=path, experiments=Experiments())["beta"] == value
    for bad in ("1e-3x", "e5", "1e", "nan", "1e-3 2"):
        with pytest.raises(VaeError, match="must be float"):
            settings.coerce("beta", bad, "x")
