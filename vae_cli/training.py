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

from vae_cli import checks, report, runs
from vae_cli.config import Config
from vae_cli.data import VAEDataModule, to_image
from vae_cli.distributed import RankSeed, ToMainProcess
from vae_cli.errors import VaeError, lightning_rejected
from vae_cli.fastpath import NoNvmlProbePerStep, ThrottledRichProgressBar
from vae_cli.likelihoods import LIKELIHOODS
from vae_cli.module import VAEModule
from vae_cli.resume import (
    LAST,
    AtomicCheckpointIO,
    EpochSums,
    GracefulStop,
    ResumedCSVLogger,
    RngState,
    checkpoint_step,
)

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


def make_trainer(cfg: Config, **kwargs: Any) -> pl.Trainer:
    """pl.Trainer from the config's accelerator/devices/strategy/nodes/precision; Lightning's
    objections to that combination (no GPU, an unknown device count...) become one line."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        return pl.Trainer(**trainer_args(cfg), **kwargs)
    except (MisconfigurationException, ValueError, RuntimeError) as e:
        settings = (f"accelerator={cfg.accelerator} devices={cfg.devices} strategy={cfg.strategy} "
                    f"num_nodes={cfg.num_nodes} precision={cfg.precision}")  # fmt: skip
        raise lightning_rejected(e, settings) from None


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def make_loggers(
    cfg: Config, version: int | None = None, resume_step: int | None = None
) -> tuple[list[Logger], Path]:
    """Loggers writing into a fresh run directory, or into `version` when resuming one."""
    env = os.environ.get(VERSION_ENV)
    if version is None and env:
        version = int(env)
    if version is None and runs.is_launcher_process():
        version = runs.claim_version(Path(cfg.runs_dir) / cfg.experiment)
    if resume_step is not None:
        csv: CSVLogger = ResumedCSVLogger(cfg.runs_dir, name=cfg.experiment, version=version,
                                          resume_step=resume_step)  # fmt: skip
    else:
        csv = CSVLogger(cfg.runs_dir, name=cfg.experiment, version=version)
    loggers: list[Logger] = [csv]
    if _tensorboard_available():
        loggers.append(
            TensorBoardLogger(cfg.runs_dir, name=cfg.experiment, version=csv.version, default_hp_metric=False)
        )
    return loggers, Path(csv.log_dir)


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
    checks.check_devices(cfg)
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
        ckpt_path = resume / runs.CHECKPOINTS / LAST
        version = int(resume.name.removeprefix("version_"))
        resume_step = checkpoint_step(ckpt_path)
    else:
        checks.ensure_writable(Path(cfg.runs_dir), "--runs-dir")
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


# `vae eval` does not inherit the run's trainer settings: one device, full precision,
# unless its flags say otherwise.
EVAL_TRAINER: dict[str, Any] = {
    "accelerator": "auto", "devices": 1, "strategy": "auto", "num_nodes": 1, "precision": "32-true",
}  # fmt: skip


def sample_on_device(
    module: VAEModule,
    n: int,
    stochastic: bool,
    temperature: float = 1.0,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
) -> Tensor | None:
    """sample_images on one device of the accelerator, under the precision's autocast.

    Sampling is a single decoder pass, so it never needs more than one device; under a
    multi-process launch (torchrun, srun) only global rank 0 draws, the others get None.
    """
    from lightning_fabric import Fabric
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:
        return None
    cfg = dataclasses.replace(module.cfg, **{**EVAL_TRAINER, **(overrides or {})}).validate()
    try:
        fabric = Fabric(accelerator=cfg.accelerator, devices=1, precision=cfg.precision)  # type: ignore[arg-type]
    except (ValueError, RuntimeError) as e:
        raise VaeError(
            f"cannot sample with accelerator={cfg.accelerator} precision={cfg.precision}: "
            f"{str(e).strip().splitlines()[0]}"
        ) from None
    module = fabric.to_device(module)
    with fabric.autocast():
        return sample_images(module, n, stochastic, temperature, seed)


def evaluate_checkpoint(
    ckpt: Path,
    split: str = "test",
    iw_samples: int = 100,
    chunk: int = 100,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Score a checkpoint on a split; the results on global rank 0, None on the other ranks.

    The numbers do not depend on the world size (docs/scaling.md): batches are fixed and
    their z noise is seeded from (seed, batch index). Trainer settings come from
    `overrides` (accelerator, devices, strategy, num_nodes, precision) or EVAL_TRAINER,
    never from the run: a run trained on 8 GPUs can be scored on a laptop.
    """
    module = load_module(ckpt)
    checks.check_compatible(module.cfg, overrides or {})
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
    """How the evaluated split was put on the likelihood's support, exactly enough to redo it."""
    from vae_cli.data import fixed_seed

    split = dm.eval_split
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
