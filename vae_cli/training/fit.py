"""Runs: fit a config, evaluate or sample a checkpoint. The CLI's commands call these."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger
from rich.console import Console

from vae_cli import report, runs
from vae_cli.data.datamodule import VAEDataModule
from vae_cli.data.sources import pinned
from vae_cli.settings import Config, RunSettings, record, run_name
from vae_cli.training import lightning_private
from vae_cli.training.checkpointing import (
    LAST,
    AtomicCheckpointIO,
    EpochSums,
    GracefulStop,
    ProcessTimer,
    Progress,
    ResumedCSVLogger,
    RngState,
    RunInterrupted,
    check_same_model,
    finished,
    read_checkpoint,
    resume_checkpoint,
    run_ended,
)
from vae_cli.training.distributed import RankSeed
from vae_cli.training.fastpath import NoNvmlProbePerStep, ThrottledRichProgressBar
from vae_cli.training.loggers import extra_loggers, parse_loggers, require_packages
from vae_cli.training.loggers import finish as finish_loggers
from vae_cli.training.module import VAEModule
from vae_cli.training.pictures import LoggerImages
from vae_cli.training.sample import SAMPLE_TITLES, sample_images
from vae_cli.training.scoring import Scorer
from vae_cli.training.trainer import check_devices, make_trainer

# DDP re-runs the command in each worker process; they must all log into the run directory
# that rank 0 created rather than each picking "the next free one".
RUN_DIR_ENV = "VAE_CLI_RUN_DIR"


def new_run_dir(cfg: Config, run: RunSettings) -> Path:
    """A fresh RUNS/<name>/version_<n> (name: --name, the experiment, or DATASET-LIKELIHOOD;
    settings.run_name) (claimed atomically by the launching process;
    DDP workers get rank 0's from the environment)."""
    env = os.environ.get(RUN_DIR_ENV)
    if env and not runs.is_launcher_process():  # only workers follow it, never a new command
        return Path(env)
    experiment_dir = Path(run.runs_dir) / runs.check_name("name", run_name(cfg, run))
    if runs.is_launcher_process():
        return experiment_dir / f"version_{runs.claim_version(experiment_dir)}"
    return experiment_dir / "version_unknown"  # a rank > 0 started by torchrun/srun: writes nothing


def make_loggers(
    run_dir: Path, resume_step: int | None = None, logger: str = "csv", hparams: dict | None = None
) -> list[Logger]:
    """Loggers whose log_dir IS run_dir (a run is its directory: wherever it was moved to,
    a resumed run writes there and nowhere else); `logger`: --logger (csv is always on)."""
    where = {"save_dir": str(run_dir.parent), "name": "", "version": run_dir.name}
    if resume_step is not None:
        csv: CSVLogger = ResumedCSVLogger(**where, resume_step=resume_step)
    else:
        csv = CSVLogger(**where)
    loggers: list[Logger] = [csv, *extra_loggers(parse_loggers(logger), run_dir, hparams or {})]
    for each in loggers:
        log_dir = getattr(each, "log_dir", None)  # MLflow has none (a store, or a server)
        if (
            log_dir is not None and Path(log_dir).resolve() != run_dir.resolve()
        ):  # Lightning changed its layout
            raise RuntimeError(f"{type(each).__name__} would write to {log_dir}, not {run_dir}")
    return loggers


def fit(
    cfg: Config,
    smoke: bool = False,
    console: Console | None = None,
    resume: Path | None = None,
    callbacks: list[pl.Callback] | None = None,
    run: RunSettings | None = None,
) -> Path | None:
    """Train; returns the run directory (None for a smoke run, which writes nothing).

    `resume`: a run directory whose checkpoints/last.ckpt to continue from, writing into
    that same directory. Raises resume.RunInterrupted after saving on SIGTERM/SIGINT.
    `callbacks` are added to the run's own (scripts/bench.py times steps with one).
    `run`: hardware and output settings (default: RunSettings()), never saved in a checkpoint.
    """
    run = run or RunSettings()
    console = console or Console(soft_wrap=True)
    check_devices(run)
    require_packages(run.logger)
    cfg = pinned(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = VAEDataModule(cfg, say=lambda line: console.print(f"data: {line}", markup=False))
    datamodule.setup("fit")  # fail on missing data before any file is written
    if not datamodule.normalised:
        console.print("[yellow]warning:[/] bernoulli on non-binary data (--binarize none): "
                      "log p(x|z) is then not a normalised density")  # fmt: skip
    module = VAEModule(cfg.to_dict(), data=datamodule.info())
    if smoke:
        trainer = make_trainer(run, fast_dev_run=True, logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, callbacks=[RankSeed(cfg.seed)])  # fmt: skip
        trainer.fit(module, datamodule=datamodule)
        (logged,) = trainer.test(Scorer(module, 0, 1, cfg.seed), datamodule=datamodule, verbose=False)
        if trainer.is_global_zero:
            elbo = logged["elbo"]
            console.print(f"smoke ok: {cfg.experiment} ({cfg.dataset}, {cfg.likelihood}, "
                          f"{cfg.arch}) test ELBO {elbo:.2f} nats")  # fmt: skip
        return None

    ckpt_path, resume_step = None, None
    if resume is not None:
        ckpt_path = resume_checkpoint(resume)
        checkpoint = read_checkpoint(ckpt_path)
        check_same_model(checkpoint, resume, ckpt_path)
        done = finished(checkpoint, cfg.epochs, cfg.max_steps)
        if done:
            console.print(f"{resume} is finished: {done}; nothing was changed. To train longer, "
                          f"pass a larger --epochs or --max-steps with --resume.")  # fmt: skip
            return resume
        resume_step = int(checkpoint.get("global_step", 0))
        run_dir = resume
    else:
        runs.ensure_writable(Path(run.runs_dir), "--runs-dir")
        run_dir = new_run_dir(cfg, run)
    loggers = make_loggers(run_dir, resume_step, run.logger, record(cfg, run))
    try:
        return _fit_logged(
            cfg, run, module, datamodule, loggers, run_dir, ckpt_path, console, callbacks or []
        )
    except BaseException:
        runs.release_if_empty(run_dir)  # a run that failed before writing anything leaves no folder
        raise


def _fit_logged(
    cfg: Config,
    run: RunSettings,
    module: VAEModule,
    datamodule: VAEDataModule,
    loggers: list[Logger],
    run_dir: Path,
    ckpt_path: Path | None,
    console: Console,
    callbacks: list[pl.Callback],
) -> Path:
    graceful = GracefulStop(run_dir / runs.CHECKPOINTS)
    timer = [ProcessTimer(run.time_limit)] if run.time_limit > 0 else []
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / runs.CHECKPOINTS, filename="best", monitor="val/elbo", mode="max",
        save_last=True, save_top_k=1, enable_version_counter=False, auto_insert_metric_name=False,
    )  # fmt: skip
    trainer = make_trainer(
        run,
        max_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        logger=loggers,
        callbacks=[
            checkpoints,
            RngState(),
            EpochSums(),
            graceful,
            *timer,  # before Progress, which acts on the stop the timer decides
            Progress(run_dir / runs.CHECKPOINTS),
            ThrottledRichProgressBar(),
            NoNvmlProbePerStep(),
            RankSeed(cfg.seed),
            LoggerImages(),
            *callbacks,
        ],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=cfg.log_every_n_steps,
    )
    if trainer.is_global_zero:
        runs.save_config(run_dir, record(cfg, run))
    os.environ[RUN_DIR_ENV] = str(run_dir)
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
        finish_loggers(parse_loggers(run.logger))
    wall = time.perf_counter() - start
    last = run_dir / runs.CHECKPOINTS / LAST
    complete = run_ended(trainer)
    if graceful.received is not None and not complete:  # stopped at an epoch's end
        raise RunInterrupted(graceful.received, trainer.global_step, last if last.exists() else None)
    if not trainer.is_global_zero:
        return run_dir
    finish_run(module, run_dir, checkpoints, wall, trainer, console)
    if timer and timer[0].fired:
        step = trainer.global_step
        console.print(f"stopped at --time-limit {run.time_limit:g} min after step {step}: saved {last}; "
                      f"continue with `vae train --resume {run_dir}`", markup=False)  # fmt: skip
    if module.guard.skipped:
        console.print(
            f"[yellow]warning:[/] skipped {module.guard.skipped} update(s) with a non-finite or too large "
            f"gradient (nonfinite={cfg.nonfinite}, skip_grad_norm={cfg.skip_grad_norm})"
        )
    if graceful.received is not None:  # it came as the run ended: the run is complete
        raise RunInterrupted(graceful.received, trainer.global_step, last, complete=True)
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
    epoch, step, best = fit_counts(trainer, checkpoints)
    for stochastic in (False, True):
        kind = "stochastic" if stochastic else "mean"
        caption = report.run_caption(run_dir, module.cfg.likelihood, step, SAMPLE_TITLES[stochastic])
        grid = sample_images(module, 64, stochastic)
        written.append(report.save_grid(grid, run_dir / f"samples-{kind}.png", nrow=8, caption=caption))
    # Lightning has finalised (flushed) the loggers in the process that ran fit.
    caption = report.run_caption(run_dir, module.cfg.likelihood, step)
    plot = report.plot_elbo_curves(run_dir / "metrics.csv", run_dir / "elbo.png", caption)
    if plot:
        written.append(plot)
    m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
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


def fit_counts(trainer: pl.Trainer, checkpoints: ModelCheckpoint) -> tuple[int, int, float | None]:
    """(epochs, global step, best val ELBO) of a finished fit, from the trainer and its
    checkpoint callback; under ddp_spawn the fit ran in worker processes, whose counters
    live only in the last checkpoint they wrote."""
    if lightning_private.ran_in_worker_processes(trainer):
        return lightning_private.checkpoint_counts(Path(checkpoints.dirpath) / LAST)
    best = checkpoints.best_model_score
    return trainer.current_epoch, trainer.global_step, None if best is None else float(best)
