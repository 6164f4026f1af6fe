"""Runs: fit a config, evaluate or sample a checkpoint. The CLI's commands call these."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger
from rich.console import Console

from vae_cli import report, runs
from vae_cli.config import Config, run_name
from vae_cli.data.datamodule import VAEDataModule
from vae_cli.train.checkpointing import (
    LAST,
    AtomicCheckpointIO,
    EpochSums,
    GracefulStop,
    ResumedCSVLogger,
    RngState,
    checkpoint_step,
)
from vae_cli.train.distributed import RankSeed, ToMainProcess
from vae_cli.train.fastpath import NoNvmlProbePerStep, ThrottledRichProgressBar
from vae_cli.train.loggers import extra_loggers, parse_loggers, require_packages
from vae_cli.train.loggers import finish as finish_loggers
from vae_cli.train.module import VAEModule
from vae_cli.train.sample import sample_images
from vae_cli.train.trainer import check_devices, make_trainer

# DDP re-runs the command in each worker process; they must all log into the version that
# rank 0 created rather than each picking "the next free one".
VERSION_ENV = "VAE_CLI_RUN_VERSION"


def make_loggers(
    cfg: Config, version: int | None = None, resume_step: int | None = None
) -> tuple[list[Logger], Path]:
    """Loggers writing into a fresh run directory, or into `version` when resuming one."""
    name = run_name(cfg)
    env = os.environ.get(VERSION_ENV)
    if version is None and env:
        version = int(env)
    if version is None and runs.is_launcher_process():
        version = runs.claim_version(Path(cfg.runs_dir) / name)
    if resume_step is not None:
        csv: CSVLogger = ResumedCSVLogger(cfg.runs_dir, name=name, version=version,
                                          resume_step=resume_step)  # fmt: skip
    else:
        csv = CSVLogger(cfg.runs_dir, name=name, version=version)
    run_dir = Path(csv.log_dir)
    extra = extra_loggers(parse_loggers(cfg.logger), cfg.runs_dir, name, csv.version, run_dir, cfg.to_dict())
    return [csv, *extra], run_dir


def fit(
    cfg: Config,
    smoke: bool = False,
    console: Console | None = None,
    resume: Path | None = None,
    callbacks: list[pl.Callback] | None = None,
) -> Path | None:
    """Train; returns the run directory (None for a smoke run, which writes nothing).

    `resume`: a run directory whose checkpoints/last.ckpt to continue from, writing into
    that same directory. Raises resume.RunInterrupted after saving on SIGTERM/SIGINT.
    `callbacks` are added to the run's own (scripts/bench.py times steps with one).
    """
    console = console or Console(soft_wrap=True)
    check_devices(cfg)
    require_packages(cfg.logger)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = VAEDataModule(cfg)
    datamodule.setup("fit")  # fail on missing data before any file is written
    if not datamodule.normalised:
        console.print("[yellow]warning:[/] bernoulli on non-binary data (--binarize none): "
                      "log p(x|z) is then not a normalised density")  # fmt: skip
    module = VAEModule(cfg.to_dict())
    if smoke:
        trainer = make_trainer(cfg, fast_dev_run=True, logger=False, enable_checkpointing=False,
                               enable_progress_bar=False,
                               callbacks=[RankSeed(cfg.seed), ToMainProcess()])  # fmt: skip
        trainer.fit(module, datamodule=datamodule)
        trainer.test(module, datamodule=datamodule, verbose=False)
        if trainer.is_global_zero:
            elbo = (module.test_results or ToMainProcess.get(trainer, "test"))["elbo"]
            console.print(f"smoke ok: {cfg.experiment} ({cfg.dataset}, {cfg.likelihood}, "
                          f"{cfg.arch}) test ELBO {elbo:.2f} nats")  # fmt: skip
        return None

    ckpt_path, version, resume_step = None, None, None
    if resume is not None:
        # the run continues in its own folder, whatever name its config would give it today
        cfg = dataclasses.replace(cfg, runs_dir=str(resume.parent.parent), name=resume.parent.name)
        ckpt_path = resume / runs.CHECKPOINTS / LAST
        version = int(resume.name.removeprefix("version_"))
        resume_step = checkpoint_step(ckpt_path)
    else:
        runs.ensure_writable(Path(cfg.runs_dir), "--runs-dir")
    loggers, run_dir = make_loggers(cfg, version=version, resume_step=resume_step)
    try:
        return _fit_logged(cfg, module, datamodule, loggers, run_dir, ckpt_path, console, callbacks or [])
    except BaseException:
        runs.release_if_empty(run_dir)  # a run that failed before writing anything leaves no folder
        raise


def _fit_logged(
    cfg: Config,
    module: VAEModule,
    datamodule: VAEDataModule,
    loggers: list[Logger],
    run_dir: Path,
    ckpt_path: Path | None,
    console: Console,
    callbacks: list[pl.Callback],
) -> Path:
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / runs.CHECKPOINTS, filename="best", monitor="val/elbo", mode="max",
        save_last=True, save_top_k=1, enable_version_counter=False, auto_insert_metric_name=False,
    )  # fmt: skip
    trainer = make_trainer(
        cfg,
        max_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        logger=loggers,
        callbacks=[
            checkpoints,
            RngState(),
            EpochSums(),
            GracefulStop(run_dir / runs.CHECKPOINTS),
            ThrottledRichProgressBar(),
            NoNvmlProbePerStep(),
            RankSeed(cfg.seed),
            ToMainProcess(),
            *callbacks,
        ],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=cfg.log_every_n_steps,
    )
    if trainer.is_global_zero:
        runs.save_config(run_dir, cfg.to_dict())
    os.environ[VERSION_ENV] = str(loggers[0].version)
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    finally:
        os.environ.pop(VERSION_ENV, None)
        finish_loggers(parse_loggers(cfg.logger))
    wall = time.perf_counter() - start
    if not trainer.is_global_zero:
        return run_dir
    finish_run(module, run_dir, checkpoints, wall, trainer, console)
    if module.guard.skipped:
        console.print(
            f"[yellow]warning:[/] skipped {module.guard.skipped} update(s) with a non-finite or too large "
            f"gradient (nonfinite={cfg.nonfinite}, skip_grad_norm={cfg.skip_grad_norm})"
        )
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
    # Lightning has finalised (flushed) the loggers in the process that ran fit.
    plot = report.plot_elbo_curves(run_dir / "metrics.csv", run_dir / "elbo.png")
    if plot:
        written.append(plot)
    m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    epoch, step, best = fit_counts(trainer)
    rows = [
        ("experiment", module.cfg.experiment),
        ("data / likelihood", f"{module.cfg.dataset} / {module.cfg.likelihood}"),
        ("epochs / steps", f"{epoch} / {step}"),
        ("wall time", f"{wall:.1f} s"),
    ]
    for key, label in (("val/elbo", "val ELBO (nats)"), ("val/recon", "val E_q log p(x|z) (nats)"),
                       ("val/kl", "val KL (nats)"), ("val/bpd", "val bits/dim (ELBO)")):  # fmt: skip
        if key in m:
            rows.append((label, f"{m[key]:.4f}" if key == "val/bpd" else f"{m[key]:.3f}"))
    if best is not None:
        rows.append(("best val ELBO (nats)", f"{best:.3f}"))
    rows.append(("run directory", str(run_dir)))
    console.print(report.metrics_table("training summary", rows))
    for path in written:
        console.print(f"wrote {path}")


def fit_counts(trainer: pl.Trainer) -> tuple[int, int, float | None]:
    """(epoch, global step, best val ELBO) of a finished fit, also under ddp_spawn, where
    the fit ran in worker processes (see ToMainProcess)."""
    fit = ToMainProcess.get(trainer, "fit")
    return int(fit["epoch"]), int(fit["global_step"]), fit.get("best_model_score")
