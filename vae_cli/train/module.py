"""VAEModule: Lightning glue between the Trainer and the pure estimators. No maths here."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import MeanMetric, SumMetric

from vae_cli.config import Config, from_dict
from vae_cli.data.batches import eval_batch_index
from vae_cli.data.registry import DATASETS
from vae_cli.data.support import bits_offset
from vae_cli.model import activity, estimators
from vae_cli.model import vae as model
from vae_cli.model.likelihoods import LIKELIHOODS
from vae_cli.train import fastpath, guards, schedules
from vae_cli.train.distributed import eval_noise
from vae_cli.train.objectives import OBJECTIVES
from vae_cli.train.objectives import TERMS as OBJECTIVE_TERMS

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
        data = data or {"shape": DATASETS[self.cfg.dataset].shape, "continuous": False}
        self.shape = tuple(data["shape"])
        self.continuous = bool(data["continuous"])
        self.dims = math.prod(self.shape)
        self.bits_offset = bits_offset(LIKELIHOODS[self.cfg.likelihood].support, self.continuous)
        self.vae = model.build(self.cfg, self.shape)
        self.objective = OBJECTIVES[self.cfg.objective]
        self.guard = guards.NonFiniteGuard(self.cfg.nonfinite, self.cfg.skip_grad_norm)
        self.step_loss = torch.zeros(())  # the loss of the step being taken, for the guard
        # Evaluation settings, set by `vae eval` before trainer.test().
        self.iw_samples = 0
        self.iw_chunk = 100
        self.eval_seed = self.cfg.seed  # eval z noise: a function of (eval_seed, batch index)
        # Means over examples kept as (sum, count) states: all-reduced as sums across ranks,
        # so uneven shards give the exact mean, never a mean of per-rank means.
        self.val_metrics = torch.nn.ModuleDict({t: MeanMetric() for t in (*TERMS, "bpd")})
        self.test_sums = torch.nn.ModuleDict(
            {f"{t}{sq}": SumMetric().set_dtype(torch.float64)
             for t in ("n", *TERMS, "iw") for sq in ("", "_sq")}
        )  # fmt: skip
        self.test_results: dict[str, float] = {}
        # Training means accumulate on the device; logged every log_every_n_steps and per epoch.
        terms = OBJECTIVE_TERMS[self.cfg.objective]
        self.train_window = fastpath.RunningMeans(terms)
        self.train_epoch = fastpath.RunningMeans(terms)
        self.bar_metrics: dict[str, float] = {}  # the last logged window, for the progress bar
        self.objective = OBJECTIVES[self.cfg.objective]  # torch.compile'd by setup() under --compile
        # Per-dimension sums of E_q[z|x] and its square, per stochastic layer: active units.
        self.mu_sums = torch.nn.ModuleDict(
            {f"z{i + 1}{sq}": activity.VectorSum(d)
             for i, d in enumerate(self.vae.layer_dims) for sq in ("", "_sq")}
        )  # fmt: skip

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
        fastpath.align_logger_step(trainer)

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

    def eval_noise(self, batch_idx: int):
        """Same z draws for the same examples whatever the world size (docs/scaling.md)."""
        b = eval_batch_index(batch_idx, self.global_rank, self.trainer.world_size)
        return eval_noise(self.eval_seed, b, self.device)

    def validation_step(self, x: Tensor, batch_idx: int) -> None:
        with self.eval_noise(batch_idx):
            out = estimators.elbo(self.vae, x)
        out["bpd"] = self.bpd(out["elbo"])
        for name, metric in self.val_metrics.items():
            metric.update(out[name])
            self.log(f"val/{name}", metric, on_epoch=True, prog_bar=name == "elbo")

    def test_step(self, x: Tensor, batch_idx: int) -> None:
        with self.eval_noise(batch_idx):
            out = estimators.elbo(self.vae, x)
            if self.iw_samples > 0:
                out["iw"] = estimators.iw_bound(self.vae, x, self.iw_samples, self.iw_chunk)
        out["n"] = torch.ones_like(out["elbo"])
        for name, value in out.items():
            self.test_sums[name].update(value.double())
            self.test_sums[f"{name}_sq"].update(value.double() ** 2)
        for i, mu in enumerate(self.vae.posterior_means(x)):
            self.mu_sums[f"z{i + 1}"].update(mu)
            self.mu_sums[f"z{i + 1}_sq"].update(mu.double() ** 2)

    def on_validation_epoch_start(self) -> None:
        self._private_states(self.val_metrics)

    def on_test_epoch_start(self) -> None:
        self._private_states(self.test_sums)
        self._private_states(self.mu_sums)

    @staticmethod
    def _private_states(metrics: torch.nn.ModuleDict) -> None:
        # reset() allocates fresh state tensors: ddp_spawn on CPU hands every worker the
        # same shared-memory tensors, and in-place sums would then add up across ranks.
        for metric in metrics.values():
            metric.reset()

    def on_test_epoch_end(self) -> None:
        # compute() all-reduces the sums across ranks: exact whatever the shard sizes.
        n = self.test_sums["n"].compute()
        results: dict[str, float] = {"n_examples": int(n.item())}
        for name in (*TERMS, "iw") if self.iw_samples > 0 else TERMS:
            mean = self.test_sums[name].compute() / n
            var = (self.test_sums[f"{name}_sq"].compute() / n - mean**2).clamp_min(0)
            results[name] = mean.item()
            # standard error of the mean over examples (unbiased variance)
            results[f"{name}_stderr"] = (var * n / (n - 1).clamp_min(1) / n).sqrt().item()
        results["bpd_elbo"] = self.bpd(torch.tensor(results["elbo"])).item()
        if "iw" in results:
            results["bpd_iw"] = self.bpd(torch.tensor(results["iw"])).item()
        results.update(self.active_units(n))
        self.test_results = results
        for metric in (*self.test_sums.values(), *self.mu_sums.values()):
            metric.reset()

    def active_units(self, n: Tensor) -> dict[str, Any]:
        per_layer = []
        for i in range(len(self.vae.layer_dims)):
            var = activity.unit_variances(
                self.mu_sums[f"z{i + 1}"].compute(), self.mu_sums[f"z{i + 1}_sq"].compute(), n
            )
            per_layer.append(activity.count_active(var))
        return {
            "active_units": sum(per_layer),
            "active_units_per_layer": per_layer,
            "latent_dims": list(self.vae.layer_dims),
        }

    def configure_optimizers(self) -> Any:
        return schedules.SCHEDULES[self.cfg.schedule](self.parameters(), self.cfg)
