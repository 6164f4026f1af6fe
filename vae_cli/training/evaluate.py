"""`vae eval`: score a checkpoint on a split, exactly and independently of the world size."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar

from vae_cli.data.datamodule import VAEDataModule
from vae_cli.settings import Config, RunSettings
from vae_cli.training.load import LoadedRun, load_run
from vae_cli.training.scoring import Scorer, unpack
from vae_cli.training.trainer import make_trainer


def evaluate_checkpoint(
    ckpt: Path,
    split: str = "test",
    iw_samples: int = 100,
    chunk: int = 100,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    run: RunSettings | None = None,
    run_dir: Path | None = None,
) -> dict[str, Any] | None:
    """Score a checkpoint on a split; the results on global rank 0, None on the other ranks.

    `overrides` change the run's data settings (batch_size, data_dir, dataset; likelihood
    only asserts). Trainer settings come from `run` (default: one device, full precision),
    never from the checkpoint, which holds none: a run trained on 8 GPUs can be scored on a
    laptop.
    """
    return evaluate(load_run(ckpt, overrides, split, run_dir), iw_samples, chunk, seed, run)


def evaluate(
    loaded: LoadedRun,
    iw_samples: int = 100,
    chunk: int = 100,
    seed: int = 0,
    run: RunSettings | None = None,
) -> dict[str, Any] | None:
    """Score a loaded run on its datamodule's eval split; results on global rank 0, else None.

    The numbers do not depend on the world size (docs/scaling.md): batches are fixed and
    their z noise is seeded from (seed, batch index).
    """
    cfg, datamodule = loaded.cfg, loaded.datamodule
    pl.seed_everything(seed, verbose=False)
    trainer = make_trainer(run or RunSettings(), logger=False, enable_checkpointing=False,
                           callbacks=[RichProgressBar()])  # fmt: skip
    start = time.perf_counter()
    scorer = Scorer(loaded.module, iw_samples, chunk, seed)
    # trainer.test returns the logged metrics, also from ddp_spawn's worker processes
    (logged,) = trainer.test(scorer, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return None
    results = unpack(logged, loaded.module.vae.layer_dims)
    results.update(
        checkpoint=str(loaded.ckpt),
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
    """How the evaluated split was put on the likelihood's support, exactly enough to redo it."""
    from vae_cli.data.support import fixed_seed

    split = dm.eval_split
    if dm.source is not None and dm.source.streamed and dm.support != "discrete":
        seed = fixed_seed("test")
        return f"streamed; each batch binarised/dequantised once with torch seed {seed} + its index"
    if dm.support == "unit" and dm.continuous:
        return "continuous floats in [0, 1], no dequantisation; bits/dim of the density on [0, 1]"
    draw = (
        f"u = torch.rand((N, C, H, W), generator=torch.Generator().manual_seed({fixed_seed(split)})) "
        f"over the {split} split's N uint8 images k in loader order (seed {fixed_seed('test')} for "
        f"test, {fixed_seed('val')} for val, whatever the other settings)"
    )
    if dm.support == "binary":
        if cfg.binarize == "none":
            return "grey levels x/255 scored by a Bernoulli: not a normalised density"
        return f"binarised once: x = 1[255 u < k], a Bernoulli(k/255) draw, with {draw}"
    if dm.support == "unit":
        return f"uniformly dequantised once: x = (k + u)/256 with {draw}; bits/dim on the 8-bit scale"
    return "8-bit integer values 0..255"
