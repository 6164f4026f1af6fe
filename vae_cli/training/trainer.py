"""The Lightning Trainer from the run settings (hardware); its objections as one line."""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch

from vae_cli.errors import VaeError, lightning_rejected
from vae_cli.settings import RunSettings


def trainer_args(cfg: RunSettings) -> dict[str, Any]:
    return {
        "accelerator": cfg.accelerator,
        "devices": cfg.devices,
        "strategy": cfg.strategy,
        "num_nodes": cfg.num_nodes,
        "precision": cfg.precision,
        "enable_model_summary": False,
    }


def make_trainer(cfg: RunSettings, **kwargs: Any) -> pl.Trainer:
    """pl.Trainer from the run settings' accelerator/devices/strategy/nodes/precision; Lightning's
    objections to that combination (no GPU, an unknown device count...) become one line."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    check_hardware(cfg)
    try:
        return pl.Trainer(**trainer_args(cfg), **kwargs)
    except (MisconfigurationException, ValueError, RuntimeError) as e:
        settings = (f"accelerator={cfg.accelerator} devices={cfg.devices} strategy={cfg.strategy} "
                    f"num_nodes={cfg.num_nodes} precision={cfg.precision}")  # fmt: skip
        raise lightning_rejected(e, settings) from None


def check_devices(cfg: RunSettings) -> None:
    """CPU "devices" are processes: Lightning would start any number of them, so cap at the cores.

    GPU counts are checked by Lightning itself (MisconfigurationException, translated by
    errors.translate).
    """
    on_cpu = cfg.accelerator == "cpu" or (cfg.accelerator == "auto" and not torch.cuda.is_available())
    cores = os.cpu_count() or 1
    if on_cpu and cfg.devices > cores:
        raise VaeError(
            f"--devices {cfg.devices} but this machine has {cores} CPU cores: pass --devices {cores} "
            f"or fewer (-1: all)"
        )


# Variables that a multi-node launcher sets (torchrun, SLURM, MPI, Lightning's own).
CLUSTER_ENV = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "NODE_RANK", "MASTER_ADDR")


def check_hardware(cfg: Any) -> None:
    """Settings Lightning accepts but that would hang (several nodes waiting forever for peers
    that no launcher started): refused up front. (The "-true" half precisions, which would fail
    mid-run, are not among the declared choices: settings.PRECISIONS.)"""
    if cfg.num_nodes > 1 and not any(os.environ.get(k) for k in CLUSTER_ENV):
        raise VaeError(
            f"--num-nodes {cfg.num_nodes} needs a launcher that starts the other nodes (srun, torchrun "
            f"--nnodes); none is present, so the run would wait forever: launch it with one, or drop "
            f"--num-nodes"
        )
