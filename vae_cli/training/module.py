"""VAEModule: Lightning glue between the Trainer and the pure estimators. No maths here."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import MeanMetric, Metric

from vae_cli.config import Config, from_dict
from vae_cli.data.batches import eval_batch_index
from vae_cli.data.registry import lookup
from vae_cli.data.support import bits_offset
from vae_cli.model import estimators
from vae_cli.model.build import build as build_model
from vae_cli.training import fastpath, guards, lightning_private, schedules
from vae_cli.training.distributed import eval_noise
from vae_cli.training.objectives import OBJECTIVES
from vae_cli.training.objectives import TERMS as OBJECTIVE_TERMS

TERMS = ("elbo", "recon", "kl")
GUARD_KEY = "vae_cli_nonfinite_guard"


class VAEModule(pl.LightningModule):
    def __init__(self, config: dict[str, Any], data: dict[str, Any] | None = None) -> None:
        """`data`: the datamodule's info() (shape, continuous), needed for user data whose
        shape is read from the files; a registered dataset's shape is its registered one."""
        super().__init__()
        self.automatic_optimization = False  # several steps per training_step: see there
        self.save_hyperparameters()  # the resolved config travels inside every checkpoint
        self.cfg: Config = from_dict(config)
        data = data or {"shape": lookup(self.cfg.dataset).shape, "continuous": False}
        self.shape = tuple(data["shape"])
        self.continuous = bool(data["continuous"])
        self.dims = math.prod(self.shape)
        self.vae = build_model(self.cfg, self.shape)
        self.bits_offset = bits_offset(self.vae.likelihood.support, self.continuous)
        self.objective = OBJECTIVES[self.cfg.objective]
        self.guard = guards.NonFiniteGuard(self.cfg.nonfinite, self.cfg.skip_grad_norm)
        self.step_loss = torch.zeros(())  # the loss of the step being taken, for the guard
        # Means over examples kept as (sum, count) states: all-reduced as sums across ranks,
        # so uneven shards give the exact mean, never a mean of per-rank means.
        # (The test loop of `vae eval` is train.scoring.Scorer.)
        self.val_metrics = torch.nn.ModuleDict({t: MeanMetric() for t in (*TERMS, "bpd")})
        # Training means accumulate on the device; logged every log_every_n_steps and per epoch.
        terms = OBJECTIVE_TERMS[self.cfg.objective]
        self.train_window = fastpath.RunningMeans(terms)
        self.train_epoch = fastpath.RunningMeans(terms)
        self.bar_metrics: dict[str, float] = {}  # the last logged window, for the progress bar
        self.objective = OBJECTIVES[self.cfg.objective]  # torch.compile'd by setup() under --compile

    def bpd(self, elbo: Tensor) -> Tensor:
        return estimators.bits_per_dim(-elbo, self.dims, self.bits_offset)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.cfg.compile:
            # The whole objective rather than only the nets: it also fuses the density terms
            # and takes the distribution objects' Python off the step (measured faster on CPU).
            self.objective = torch.compile(self.objective)

    def training_step(self, batches: tuple[Tensor, ...], batch_idx: int) -> None:
        """One optimiser step per mini-batch (`steps_per_call` of them: see
        data.TensorBatches), so Lightning's per-batch loop runs once per several. The steps go
        through Lightning's optimizer wrapper and manual_backward: precision plugins, DDP's
        gradient sync, the optimizer hooks and global_step work as under automatic
        optimisation, in the same order (step, zero_grad, backward, update)."""
        trainer = self.trainer
        opt = self.optimizers()
        schedules.catch_up(trainer.lr_scheduler_configs, self.current_epoch)
        for x in batches:
            loss, out = self.objective(self.vae, x, self.cfg, self.global_step)
            self.train_window.update(out)
            if fastpath.log_due(trainer, self.cfg.log_every_n_steps):
                self.log_window(out)
            opt.zero_grad(set_to_none=True)
            self.step_loss = loss
            self.manual_backward(loss)
            opt.step()
            if 0 < trainer.max_steps <= self.global_step:
                break
        lightning_private.align_logger_step(trainer)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        where = f"step {self.global_step} (epoch {self.current_epoch})"
        ckpt = self.trainer.checkpoint_callback
        kept = lambda: guards.kept_checkpoint(getattr(ckpt, "dirpath", None))  # noqa: E731
        self.guard.check(self.step_loss, optimizer, where, kept)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[GUARD_KEY] = self.guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.guard.load_state_dict(checkpoint.get(GUARD_KEY, {}))

    def flush_window(self) -> tuple[Tensor, int] | None:
        taken = self.train_window.take()
        if taken is not None:
            self.train_epoch.add(*taken)
        return taken

    def log_window(self, out: dict[str, Tensor]) -> None:
        """train/{elbo,recon,kl,bpd}_step: this rank's means over the examples since the last
        log, written straight to the loggers. Not self.log: every metric it registers is
        revisited by Lightning on every later step, which costs more than the step's maths."""
        taken = self.flush_window()
        if taken is None:
            return
        metrics = self.train_means(*taken, "step")
        metrics.update({f"train/{k}": v for k, v in self.vae.likelihood.extra_metrics().items()})
        metrics.update({f"train/{k}": v for k, v in out.items() if v.ndim == 0})  # e.g. beta
        scalars = {k: float(v) for k, v in metrics.items()}  # the one host sync per window
        self.bar_metrics = {"train/elbo": scalars["train/elbo_step"]}
        for logger in self.loggers:
            logger.log_metrics({**scalars, "epoch": self.current_epoch}, step=self.global_step)

    def on_train_epoch_end(self) -> None:
        self.flush_window()
        taken = self.train_epoch.take()
        if taken is None:
            return
        # Sums and counts are added across ranks, never means averaged: exact for any shards.
        reduce = self.trainer.strategy.reduce
        sums = reduce(taken[0], reduce_op="sum")
        count = reduce(torch.tensor(float(taken[1]), device=sums.device), reduce_op="sum")
        for name, value in self.train_means(sums, count, "epoch").items():
            self.log(name, value, on_epoch=True, batch_size=1, prog_bar=name == "train/elbo_epoch")

    def train_means(self, sums: Tensor, count: int | Tensor, suffix: str) -> dict[str, Tensor]:
        """bpd is affine in the ELBO, so its mean is the bpd of the mean ELBO."""
        means = self.train_window.means(sums, count)
        means["bpd"] = self.bpd(means["elbo"])
        return {f"train/{name}_{suffix}": value for name, value in means.items()}

    def validation_step(self, x: Tensor, batch_idx: int) -> None:
        # Same z draws for the same examples whatever the world size (docs/scaling.md).
        b = eval_batch_index(batch_idx, self.global_rank, self.trainer.world_size)
        with eval_noise(self.cfg.seed, b, self.device):
            out = estimators.elbo(self.vae, x)
        out["bpd"] = self.bpd(out["elbo"])
        for name, metric in self.val_metrics.items():
            metric.update(out[name])
            self.log(f"val/{name}", metric, on_epoch=True, prog_bar=name == "elbo")

    def on_validation_epoch_start(self) -> None:
        fresh_states(self.val_metrics.values())

    def configure_optimizers(self) -> Any:
        # The strategy is a run setting, so it comes from the Trainer: Lightning names the
        # sharded ones ("fsdp", "deepspeed"); DDP has no name.
        try:
            strategy = getattr(self.trainer.strategy, "strategy_name", "auto")
        except RuntimeError:  # not attached to a Trainer (a test building the optimiser)
            strategy = "auto"
        return schedules.SCHEDULES[self.cfg.schedule](self.parameters(), self.cfg, strategy)


def fresh_states(metrics: Iterable[Metric]) -> None:
    """reset() allocates fresh state tensors: ddp_spawn on CPU hands every worker the same
    shared-memory tensors, and in-place sums would then add up across ranks."""
    for metric in metrics:
        metric.reset()
