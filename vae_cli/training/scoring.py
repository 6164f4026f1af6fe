"""The test loop of `vae eval`: a trained VAEModule scored with settings given at construction.

Results are the metrics `trainer.test()` returns (Lightning brings them back from ddp_spawn
workers too), not attributes read off the module afterwards. Exact whatever the world size
(docs/scaling.md): every mean is a float64 (sum, count) all-reduced as sums, and the z noise
of a batch depends on (seed, global batch index) only.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import SumMetric

from vae_cli.data.batches import eval_batch_index
from vae_cli.model import activity, estimators
from vae_cli.training.distributed import eval_noise
from vae_cli.training.module import TERMS, VAEModule, fresh_states

ACTIVE_PREFIX = "active_units/z"  # one logged scalar per stochastic layer: active_units/z1, ...


class Scorer(pl.LightningModule):
    """ELBO terms, the IW bound (iw_samples > 0) and active units of `trained` on a split."""

    def __init__(self, trained: VAEModule, iw_samples: int, chunk: int, seed: int) -> None:
        super().__init__()
        self.trained = trained
        self.iw_samples, self.chunk, self.seed = iw_samples, chunk, seed
        self.terms = (*TERMS, "iw") if iw_samples > 0 else TERMS
        self.sums = torch.nn.ModuleDict(
            {
                f"{t}{sq}": SumMetric().set_dtype(torch.float64)
                for t in ("n", *self.terms)
                for sq in ("", "_sq")
            }
        )
        # Per-dimension sums of E_q[z|x] and its square, per stochastic layer: active units.
        self.mu_sums = torch.nn.ModuleDict(
            {f"z{i + 1}{sq}": activity.VectorSum(d)
             for i, d in enumerate(trained.vae.layer_dims) for sq in ("", "_sq")}
        )  # fmt: skip

    def on_test_epoch_start(self) -> None:
        fresh_states([*self.sums.values(), *self.mu_sums.values()])

    def test_step(self, x: Tensor, batch_idx: int) -> None:
        vae = self.trained.vae
        b = eval_batch_index(batch_idx, self.global_rank, self.trainer.world_size)
        with eval_noise(self.seed, b, self.device):
            out = estimators.elbo(vae, x)
            if self.iw_samples > 0:
                out["iw"] = estimators.iw_bound(vae, x, self.iw_samples, self.chunk)
        out["n"] = torch.ones_like(out["elbo"])
        for name, value in out.items():
            self.sums[name].update(value.double())
            self.sums[f"{name}_sq"].update(value.double() ** 2)
        with eval_noise(self.seed, b, self.device, stream=1):  # the 2-layer E[z2|x] averages z1 draws
            means = vae.posterior_means(x)
        for i, mu in enumerate(means):
            self.mu_sums[f"z{i + 1}"].update(mu)
            self.mu_sums[f"z{i + 1}_sq"].update(mu.double() ** 2)

    def on_test_epoch_end(self) -> None:
        # compute() all-reduces the sums across ranks, so every rank holds the same exact
        # values; a max over identical values keeps them exact (a mean could round) and tells
        # Lightning the values are synced. float64 tensors stay float64 in its results.
        for name, value in self.results().items():
            self.log(name, value, batch_size=1, sync_dist=True, reduce_fx="max")

    def results(self) -> dict[str, Tensor]:
        n = self.sums["n"].compute()
        out = {"n_examples": n}
        for name in self.terms:
            mean = self.sums[name].compute() / n
            var = (self.sums[f"{name}_sq"].compute() / n - mean**2).clamp_min(0)
            out[name] = mean
            # standard error of the mean over examples (unbiased variance)
            out[f"{name}_stderr"] = (var * n / (n - 1).clamp_min(1) / n).sqrt()
        out["bpd_elbo"] = self.trained.bpd(out["elbo"])
        if "iw" in out:
            out["bpd_iw"] = self.trained.bpd(out["iw"])
        for i in range(len(self.trained.vae.layer_dims)):
            var = activity.unit_variances(
                self.mu_sums[f"z{i + 1}"].compute(), self.mu_sums[f"z{i + 1}_sq"].compute(), n
            )
            out[f"{ACTIVE_PREFIX}{i + 1}"] = torch.tensor(activity.count_active(var), dtype=torch.float64)
        return out


def unpack(logged: dict[str, float], layer_dims: tuple[int, ...]) -> dict[str, Any]:
    """`trainer.test()`'s logged scalars as eval.json's numbers (counts as ints, per-layer lists)."""
    results: dict[str, Any] = {k: v for k, v in logged.items() if not k.startswith(ACTIVE_PREFIX)}
    results["n_examples"] = round(results["n_examples"])
    one = results["n_examples"] < 2  # one example has no spread: no stderr, no Cov_x(E_q z)
    if one:
        results.update({k: None for k in results if k.endswith("_stderr")})
    per_layer = [round(logged[f"{ACTIVE_PREFIX}{i + 1}"]) for i in range(len(layer_dims))]
    results.update(
        active_units=None if one else sum(per_layer),
        active_units_per_layer=None if one else per_layer,
        latent_dims=list(layer_dims),
    )
    return results
