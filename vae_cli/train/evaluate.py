"""`vae eval`: score a checkpoint on a split, exactly and independently of the world size."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar

from vae_cli.config import Config
from vae_cli.data.datamodule import VAEDataModule
from vae_cli.train.load import LoadedRun, load_run
from vae_cli.train.scoring import Scorer, unpack
from vae_cli.train.trainer import EVAL_TRAINER, make_trainer


def evaluate_checkpoint(
    ckpt: Path,
    split: str = "test",
    iw_samples: int = 100,
    chunk: int = 100,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Score a checkpoint on a split; the results on global rank 0, None on the other ranks.

    Trainer settings come from `overrides` (accelerator, devices, strategy, num_nodes,
    precision) or EVAL_TRAINER, never from the run: a run trained on 8 GPUs can be scored
    on a laptop.
    """
    run = load_run(ckpt, {**EVAL_TRAINER, **(overrides or {})}, split)
    return evaluate(run, iw_samples, chunk, seed)


def evaluate(run: LoadedRun, iw_samples: int = 100, chunk: int = 100, seed: int = 0) -> dict[str, Any] | None:
    """Score a loaded run on its datamodule's eval split; results on global rank 0, else None.

    The numbers do not depend on the world size (docs/scaling.md): batches are fixed and
    their z noise is seeded from (seed, batch index).
    """
    cfg, datamodule = run.cfg, run.datamodule
    pl.seed_everything(seed, verbose=False)
    trainer = make_trainer(cfg, logger=False, enable_checkpointing=False, callbacks=[RichProgressBar()])
    start = time.perf_counter()
    scorer = Scorer(run.module, iw_samples, chunk, seed)
    # trainer.test returns the logged metrics, also from ddp_spawn's worker processes
    (logged,) = trainer.test(scorer, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return None
    results = unpack(logged, run.module.vae.layer_dims)
    results.update(
        checkpoint=str(run.ckpt),
        split=datamodule.eval_split,
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
