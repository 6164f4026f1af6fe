"""VAEModule: Lightning glue between the Trainer and the pure estimators. No maths here."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import MeanMetric, SumMetric

from vae_cli import estimators
from vae_cli.config import Config, from_dict
from vae_cli.data import DATASETS, bits_offset, eval_batch_index
from vae_cli.distributed import eval_noise
from vae_cli.likelihoods import LIKELIHOODS
from vae_cli.model import VAE

TERMS = ("elbo", "recon", "kl")


class VAEModule(pl.LightningModule):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()  # the resolved config travels inside every checkpoint
        self.cfg: Config = from_dict(config)
        self.shape = DATASETS[self.cfg.dataset].shape
        self.dims = math.prod(self.shape)
        self.bits_offset = bits_offset(LIKELIHOODS[self.cfg.likelihood].support)
        self.vae = VAE.from_config(self.cfg, self.shape)
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

    def bpd(self, elbo: Tensor) -> Tensor:
        return estimators.bits_per_dim(-elbo, self.dims, self.bits_offset)

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        out = estimators.elbo(self.vae, x)
        loss = -out["elbo"].mean()
        n = x.shape[0]
        for t in TERMS:
            self.log(f"train/{t}", out[t].mean(), on_step=True, on_epoch=True, batch_size=n,
                     prog_bar=t == "elbo")  # fmt: skip
        self.log("train/bpd", self.bpd(out["elbo"]).mean(), on_epoch=True, batch_size=n)
        for name, value in self.vae.likelihood.extra_metrics().items():
            self.log(f"train/{name}", value, batch_size=n)
        return loss

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

    def on_validation_epoch_start(self) -> None:
        self._private_states(self.val_metrics)

    def on_test_epoch_start(self) -> None:
        self._private_states(self.test_sums)

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
        self.test_results = results
        for metric in self.test_sums.values():
            metric.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.cfg.lr)
