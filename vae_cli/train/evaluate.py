"""`vae eval`: score a checkpoint on a split, exactly and independently of the world size."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar

from vae_cli.config import Config
from vae_cli.data.datamodule import VAEDataModule
from vae_cli.train.distributed import ToMainProcess
from vae_cli.train.load import check_compatible, load_module
from vae_cli.train.trainer import EVAL_TRAINER, make_trainer


def evaluate_checkpoint(
    ckpt: Path,
    split: str = "test",
    iw_samples: int = 100,
    chunk: int = 100,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    run_dir: Path | None = None,
) -> dict[str, Any] | None:
    """Score a checkpoint on a split; the results on global rank 0, None on the other ranks.

    The numbers do not depend on the world size (docs/scaling.md): batches are fixed and
    their z noise is seeded from (seed, batch index). Trainer settings come from
    `overrides` (accelerator, devices, strategy, num_nodes, precision) or EVAL_TRAINER,
    never from the run: a run trained on 8 GPUs can be scored on a laptop.
    """
    module = load_module(ckpt, run_dir)
    check_compatible(module.cfg, overrides or {})
    cfg = dataclasses.replace(module.cfg, **{**EVAL_TRAINER, **(overrides or {})}).validate()
    datamodule = VAEDataModule(cfg)
    datamodule.setup("test")
    datamodule.eval_split = split
    module.iw_samples, module.iw_chunk, module.eval_seed = iw_samples, chunk, seed
    pl.seed_everything(seed, verbose=False)
    trainer = make_trainer(cfg, logger=False, enable_checkpointing=False,
                           callbacks=[RichProgressBar(), ToMainProcess()])  # fmt: skip
    start = time.perf_counter()
    trainer.test(module, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return None
    # ddp_spawn: the results were computed in a worker and came back in callback_metrics
    results: dict[str, Any] = dict(module.test_results or ToMainProcess.get(trainer, "test"))
    results["n_examples"] = int(results["n_examples"])
    results.update(
        checkpoint=str(ckpt),
        split=split,
        dataset=cfg.dataset,
        likelihood=cfg.likelihood,
        iw_samples=iw_samples,
        seed=seed,
        world_size=trainer.world_size,
        precision=str(trainer.precision),
        normalised=datamodule.normalised,
        data_protocol=protocol(cfg, datamodule),
        wall_time_s=round(time.perf_counter() - start, 3),
        peak_rss_mib=peak_rss_mib(),
    )
    return results


def peak_rss_mib() -> float | None:
    """This process's peak resident memory so far (Linux/macOS), for the eval report."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes vs KiB


def protocol(cfg: Config, dm: VAEDataModule) -> str:
    """One sentence on how the evaluated data was put on the likelihood's support."""
    from vae_cli.data.support import EVAL_SEED

    if dm.support == "binary":
        if cfg.binarize == "none":
            return "grey levels x/255 scored by a Bernoulli: not a normalised density"
        return f"binarised once: x ~ Bernoulli(pixel/255) with torch seed {EVAL_SEED}"
    if dm.support == "unit":
        return (
            f"uniformly dequantised once: (k + u)/256 with torch seed {EVAL_SEED}; "
            "bits/dim on the 8-bit scale"
        )
    return "8-bit integer values 0..255"
