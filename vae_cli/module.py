"""VAEModule: Lightning glue between the Trainer and the pure estimators. No maths here."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import MeanMetric, SumMetric

from vae_cli import activity, estimators, model, schedules
from vae_cli.config import Config, from_dict
from vae_cli.data import DATASETS, bits_offset
from vae_cli.likelihoods import LIKELIHOODS
from vae_cli.objectives import OBJECTIVES

TERMS = ("elbo", "recon", "kl")


class VAEModule(pl.LightningModule):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()  # the resolved config travels inside every checkpoint
        self.cfg: Config = from_dict(config)
        self.shape = DATASETS[self.cfg.dataset].shape
        self.dims = math.prod(self.shape)
        self.bits_offset = bits_offset(LIKELIHOODS[self.cfg.likelihood].support)
        self.vae = model.build(self.cfg, self.shape)
        self.objective = OBJECTIVES[self.cfg.objective]
        # Evaluation settings, set by `vae eval` before trainer.test().
        self.iw_samples = 0
        self.iw_chunk = 100
        # Means over examples kept as (sum, count) states: all-reduced as sums across ranks,
        # so uneven shards give the exact mean, never a mean of per-rank means.
        self.val_metrics = torch.nn.ModuleDict({t: MeanMetric() for t in (*TERMS, "bpd")})
        self.test_sums = torch.nn.ModuleDict(
            {f"{t}{sq}": SumMetric().set_dtype(torch.float64)
             for t in ("n", *TERMS, "iw") for sq in ("", "_sq")}
        )  # fmt: skip
        self.test_results: dict[str, float] = {}
        # Per-dimension sums of E_q[z|x] and its square, per stochastic layer: active units.
        self.mu_sums = torch.nn.ModuleDict(
            {f"z{i + 1}{sq}": activity.VectorSum(d)
             for i, d in enumerate(self.vae.layer_dims) for sq in ("", "_sq")}
        )  # fmt: skip

    def bpd(self, elbo: Tensor) -> Tensor:
        return estimators.bits_per_dim(-elbo, self.dims, self.bits_offset)

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        loss, out = self.objective(self.vae, x, self.cfg, self.global_step)
        n = x.shape[0]
        for t, value in out.items():
            self.log(f"train/{t}", value.mean(), on_step=True, on_epoch=True, batch_size=n,
                     prog_bar=t == "elbo")  # fmt: skip
        self.log("train/bpd", self.bpd(out["elbo"]).mean(), on_epoch=True, batch_size=n)
        for name, value in self.vae.likelihood.extra_metrics().items():
            self.log(f"train/{name}", value, batch_size=n)
        return loss

    def validation_step(self, x: Tensor, batch_idx: int) -> None:
        out = estimators.elbo(self.vae, x)
        out["bpd"] = self.bpd(out["elbo"])
        for name, metric in self.val_metrics.items():
            metric.update(out[name])
            self.log(f"val/{name}", metric, on_epoch=True, prog_bar=name == "elbo")

    def test_step(self, x: Tensor, batch_idx: int) -> None:
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
