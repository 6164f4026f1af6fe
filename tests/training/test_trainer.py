"""training/trainer.py: what Lightning would accept but that would hang or oversubscribe is
refused before a Trainer exists: several nodes only under a launcher that starts them, CPU
"devices" (processes) at most the cores."""

from __future__ import annotations

import os

import pytest

from vae_cli.errors import VaeError
from vae_cli.settings import RunSettings
from vae_cli.training import trainer

# The variables docs/errors.md names for the launchers that start the other nodes
# (torchrun, SLURM, MPI, Lightning's own), written out here independently of trainer.py.
LAUNCHER_VARIABLES = (
    "WORLD_SIZE",
    "SLURM_NTASKS",
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "NODE_RANK",
    "MASTER_ADDR",
)


@pytest.fixture
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in LAUNCHER_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("var", LAUNCHER_VARIABLES)
def test_several_nodes_start_only_under_a_launcher(var: str, no_launcher: pytest.MonkeyPatch):
    trainer.check_hardware(RunSettings(num_nodes=1))  # one node needs no launcher
    with pytest.raises(VaeError, match="--num-nodes 2 needs a launcher"):
        trainer.check_hardware(RunSettings(num_nodes=2))
    no_launcher.setenv(var, "")  # set but empty: no launcher set it
    with pytest.raises(VaeError, match="needs a launcher"):
        trainer.check_hardware(RunSettings(num_nodes=2))
    no_launcher.setenv(var, "2")
    trainer.check_hardware(RunSettings(num_nodes=2))  # the launcher starts the other nodes


def test_cpu_devices_are_capped_at_the_cores(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    trainer.check_devices(RunSettings(accelerator="cpu", devices=4))
    with pytest.raises(VaeError, match="--devices 5 but this machine has 4 CPU cores: pass --devices 4"):
        trainer.check_devices(RunSettings(accelerator="cpu", devices=5))
    trainer.check_devices(RunSettings(accelerator="gpu", devices=5))  # GPU counts: Lightning checks them
