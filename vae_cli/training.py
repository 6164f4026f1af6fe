"""Runs: fit a config, evaluate or sample a checkpoint. The CLI's commands call these."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from rich.console import Console
from torch import Tensor

from vae_cli import report, runs
from vae_cli.config import Config
from vae_cli.data import VAEDataModule, to_image
from vae_cli.errors import VaeError
from vae_cli.likelihoods import LIKELIHOODS
from vae_cli.module import VAEModule

# DDP re-runs the command in each worker process; they must all log into the version that
# rank 0 created rather than each picking "the next free one".
VERSION_ENV = "VAE_CLI_RUN_VERSION"


def trainer_args(cfg: Config) -> dict[str, Any]:
    return {
        "accelerator": cfg.accelerator,
        "devices": cfg.devices,
        "strategy": cfg.strategy,
        "num_nodes": cfg.num_nodes,
        "precision": cfg.precision,
        "enable_model_summary": False,
    }


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def make_loggers(cfg: Config) -> tuple[list[Logger], Path]:
    version = os.environ.get(VERSION_ENV)
    csv = CSVLogger(cfg.runs_dir, name=cfg.experiment, version=int(version) if version else None)
    loggers: list[Logger] = [csv]
    if _tensorboard_available():
        loggers.append(
            TensorBoardLogger(cfg.runs_dir, name=cfg.experiment, version=csv.version, default_hp_metric=False)
        )
    return loggers, Path(csv.log_dir)


def fit(cfg: Config, smoke: bool = False, console: Console | None = None) -> Path | None:
    """Train; returns the run directory (None for a smoke run, which writes nothing)."""
    console = console or Console()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = VAEDataModule(cfg)
    datamodule.setup("fit")  # fail on missing data before any file is written
    if not datamodule.normalised:
        console.print("[yellow]warning:[/] bernoulli on non-binary data (--binarize none): "
                      "log p(x|z) is then not a normalised density")  # fmt: skip
    module = VAEModule(cfg.to_dict())
    if smoke:
        trainer = pl.Trainer(fast_dev_run=True, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, **trainer_args(cfg))  # fmt: skip
        trainer.fit(module, datamodule=datamodule)
        trainer.test(module, datamodule=datamodule, verbose=False)
        if trainer.is_global_zero:
            console.print(f"smoke ok: {cfg.experiment} ({cfg.dataset}, {cfg.likelihood}, "
                          f"{cfg.arch}) test ELBO {module.test_results['elbo']:.2f} nats")  # fmt: skip
        return None

    loggers, run_dir = make_loggers(cfg)
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / runs.CHECKPOINTS, filename="best", monitor="val/elbo", mode="max",
        save_last=True, save_top_k=1, enable_version_counter=False, auto_insert_metric_name=False,
    )  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        logger=loggers,
        callbacks=[checkpoints, RichProgressBar()],
        log_every_n_steps=cfg.log_every_n_steps,
        **trainer_args(cfg),
    )
    if trainer.is_global_zero:
        runs.save_config(run_dir, cfg.to_dict())
    os.environ[VERSION_ENV] = str(loggers[0].version)
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule)
    finally:
        os.environ.pop(VERSION_ENV, None)
    wall = time.perf_counter() - start
    if not trainer.is_global_zero:
        return run_dir
    finish_run(module, run_dir, checkpoints, wall, trainer, console)
    return run_dir


def finish_run(
    module: VAEModule,
    run_dir: Path,
    checkpoints: ModelCheckpoint,
    wall: float,
    trainer: pl.Trainer,
    console: Console,
) -> None:
    """Rank 0 only: sample grids, the ELBO plot and the summary table."""
    module = module.cpu()
    written = []
    for stochastic in (False, True):
        name = f"samples-{'stochastic' if stochastic else 'mean'}.png"
        written.append(report.save_grid(sample_images(module, 64, stochastic), run_dir / name))
    for logger in trainer.loggers:
        logger.finalize("success")
    plot = report.plot_elbo_curves(run_dir / "metrics.csv", run_dir / "elbo.png")
    if plot:
        written.append(plot)
    m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    rows = [
        ("experiment", module.cfg.experiment),
        ("data / likelihood", f"{module.cfg.dataset} / {module.cfg.likelihood}"),
        ("epochs / steps", f"{trainer.current_epoch} / {trainer.global_step}"),
        ("wall time", f"{wall:.1f} s"),
    ]
    for key, label in (("val/elbo", "val ELBO (nats)"), ("val/recon", "val E_q log p(x|z) (nats)"),
                       ("val/kl", "val KL (nats)"), ("val/bpd", "val bits/dim (ELBO)")):  # fmt: skip
        if key in m:
            rows.append((label, f"{m[key]:.4f}" if key == "val/bpd" else f"{m[key]:.3f}"))
    if checkpoints.best_model_score is not None:
        rows.append(("best val ELBO (nats)", f"{float(checkpoints.best_model_score):.3f}"))
    rows.append(("run directory", str(run_dir)))
    console.print(report.metrics_table("training summary", rows))
    for path in written:
        console.print(f"wrote {path}")


def load_module(ckpt: Path) -> VAEModule:
    if not Path(ckpt).is_file():
        raise VaeError(f"checkpoint {ckpt} does not exist: pass a run directory or a .ckpt file")
    try:
        module = VAEModule.load_from_checkpoint(str(ckpt), map_location="cpu")
    except VaeError:
        raise
    except Exception as e:
        raise VaeError(
            f"{ckpt} is not a readable vae-cli checkpoint ({type(e).__name__}): "
            f"pass a checkpoint written by `vae train`"
        ) from None
    return module.eval()


@torch.no_grad()
def sample_images(
    module: VAEModule, n: int, stochastic: bool, temperature: float = 1.0, seed: int = 0
) -> Tensor:
    """z ~ N(0, T^2 I); E[x|z] by default or x ~ p(x|z); as [0,1] images for display.

    The z draw comes first from its own generator, so a mean grid and a stochastic grid
    with the same seed show the same z.
    """
    vae = module.vae.eval()
    device = next(vae.parameters()).device
    z = torch.randn(n, vae.latent_dim, generator=torch.Generator().manual_seed(seed)) * temperature
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        dist = vae.decode_prior(z.to(device))  # 2 layers: z2 -> z1 -> x
        x = dist.sample() if stochastic else dist.mean
    return to_image(x, LIKELIHOODS[module.cfg.likelihood].support).cpu()


def evaluate_checkpoint(
    ckpt: Path,
    split: str = "test",
    iw_samples: int = 100,
    chunk: int = 100,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    module = load_module(ckpt)
    cfg = dataclasses.replace(module.cfg, **(overrides or {})).validate()
    datamodule = VAEDataModule(cfg)
    datamodule.setup("test")
    datamodule.eval_split = split
    module.iw_samples, module.iw_chunk = iw_samples, chunk
    pl.seed_everything(seed, verbose=False)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, callbacks=[RichProgressBar()],
                         **trainer_args(cfg))  # fmt: skip
    start = time.perf_counter()
    trainer.test(module, datamodule=datamodule, verbose=False)
    results: dict[str, Any] = dict(module.test_results)
    results.update(
        checkpoint=str(ckpt),
        split=split,
        dataset=cfg.dataset,
        likelihood=cfg.likelihood,
        iw_samples=iw_samples,
        seed=seed,
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
    from vae_cli.data import EVAL_SEED

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
