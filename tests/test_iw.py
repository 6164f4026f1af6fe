"""Importance-weighted evaluation and training (issue 4).

Every numerical check is against an independent reference: a float64 formula written
out here, torch.distributions.MultivariateNormal for an exactly known log p(x), or a
statistical inequality with its tolerance stated.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

from vae_cli.config import Config, resolve
from vae_cli.errors import VaeError
from vae_cli.model import estimators
from vae_cli.model.likelihoods import GaussianLikelihood
from vae_cli.model.vae import VAE, Latents
from vae_cli.train import objectives, schedules
from vae_cli.train.module import VAEModule

torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared CPU


def digits_module(**overrides) -> VAEModule:
    cfg = Config(dataset="digits", latent_dim=4, hidden_dim=32, **overrides).validate()
    return VAEModule(cfg.to_dict()).eval()


def binary_batch(n: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.3), generator=g)


# ---------------------------------------------------------------- K=1 and the ELBO
@pytest.mark.parametrize("layers", [1, 2])
def test_iw_bound_with_one_sample_is_the_elbo_on_the_same_noise(layers: int) -> None:
    vae = digits_module(stochastic_layers=layers).vae
    x = binary_batch()
    with torch.no_grad():
        torch.manual_seed(3)
        iw1 = estimators.iw_bound(vae, x, 1)
        torch.manual_seed(3)
        elbo = estimators.elbo(vae, x, analytic_kl=False)["elbo"]
    assert torch.allclose(iw1, elbo, atol=1e-4), (iw1 - elbo).abs().max()


def test_iw_bound_is_above_the_elbo_and_grows_with_k() -> None:
    """E[IW_K] is non-decreasing in K and E[IW_1] = ELBO (Burda et al., Theorem 1).

    Estimated from R repeats over 32 examples; each inequality must hold up to 3 standard
    errors of the mean difference (a chance failure is then about 1 in 700 per check).
    """
    vae = digits_module().vae
    x = binary_batch(32)
    repeats = 30
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([estimators.elbo(vae, x)["elbo"] for _ in range(repeats)])
        iw = {k: torch.stack([estimators.iw_bound(vae, x, k) for _ in range(repeats)]) for k in (1, 5, 50)}

    def at_least(hi: torch.Tensor, lo: torch.Tensor) -> None:
        diff = (hi - lo).flatten().double()
        se = diff.std() / math.sqrt(diff.numel())
        assert diff.mean() >= -3 * se, (diff.mean().item(), se.item())

    at_least(iw[1], elbo)  # equal in expectation: the check is two-sided below
    at_least(elbo, iw[1])
    at_least(iw[5], elbo)
    at_least(iw[5], iw[1])
    at_least(iw[50], iw[5])
    # and strictly: q(z|x) of an untrained encoder is not the posterior, so K=50 gains
    gain = (iw[50] - iw[1]).flatten().double()
    assert gain.mean() > 3 * gain.std() / math.sqrt(gain.numel()), gain.mean()


# ---------------------------------------------------------------- exact log p(x)
def linear_gaussian(d: int = 3, latent: int = 2, sigma: float = 0.5) -> tuple[VAE, MultivariateNormal]:
    """p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I): then p(x) = N(b, W W^T + sigma^2 I).

    The encoder is the exact posterior mean shifted by 0.25, with a diagonal, over-dispersed
    covariance, so q != p(z|x) (the ELBO is strictly below log p(x)) but importance sampling
    still converges.
    """
    g = torch.Generator().manual_seed(0)
    w = torch.randn(d, latent, generator=g)
    b = torch.randn(d, generator=g)
    post_cov = torch.linalg.inv(torch.eye(latent) + w.T @ w / sigma**2)
    gain = post_cov @ w.T / sigma**2  # E[z|x] = gain (x - b)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, 2 * latent))
    decoder = nn.Sequential(nn.Linear(latent, d), nn.Unflatten(1, (1, 1, d)))
    with torch.no_grad():
        encoder[1].weight.copy_(torch.cat([gain, torch.zeros(latent, d)]))
        encoder[1].bias.copy_(torch.cat([-gain @ b + 0.25, post_cov.diagonal().log() + 0.5]))
        decoder[0].weight.copy_(w)
        decoder[0].bias.copy_(b)
    vae = VAE(encoder, decoder, GaussianLikelihood(sigma), latent)
    marginal = MultivariateNormal(b.double(), (w @ w.T + sigma**2 * torch.eye(d)).double())
    return vae, marginal


def test_iw_estimate_converges_to_the_exact_log_likelihood_of_a_linear_gaussian() -> None:
    vae, marginal = linear_gaussian()
    torch.manual_seed(1)
    x = marginal.sample((64,)).float().view(64, 1, 1, 3)
    log_px = marginal.log_prob(x.view(64, 3).double())
    torch.manual_seed(2)
    with torch.no_grad():
        elbo = estimators.elbo(vae, x, k=2000)["elbo"].double()  # E_q by 2000 samples
        gaps = {k: (log_px - estimators.iw_bound(vae, x, k, chunk=1000).double()).mean().item()
                for k in (1, 10, 100, 5000)}  # fmt: skip
    assert (elbo <= log_px + 0.05).all()  # ELBO <= log p(x) per example, up to MC error
    assert (log_px - elbo).mean() > 0.1  # and strictly below: q is not the posterior
    # the gap log p(x) - IW_K shrinks with K (MC error at K=5000 is a few 0.001 nats)
    assert gaps[1] > 0.5 and gaps[10] < gaps[1] / 2 and abs(gaps[100]) < 0.2, gaps
    assert abs(gaps[5000]) < 0.01, gaps  # within 0.01 nats of the exact log p(x)


# ---------------------------------------------------------------- chunking
class ReplayNoise:
    """A 1-layer VAE whose posterior noise is read, in order, from one fixed tensor, so a
    chunked and an unchunked evaluation see exactly the same samples."""

    def __init__(self, vae: VAE, eps: torch.Tensor) -> None:
        self.vae, self.eps, self.used = vae, eps, 0

    def sample_posterior(self, x: torch.Tensor, k: int) -> Latents:
        q = self.vae.posterior(x)
        z = q.mean + q.stddev * self.eps[self.used : self.used + k]
        self.used += k
        return Latents((z,), q.log_prob(z), None)

    def log_prior(self, zs):
        return self.vae.log_prior(zs)

    def log_likelihood(self, x, zs):
        return self.vae.log_likelihood(x, zs)


def reference_iw(vae: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The IW bound written out in float64: Bernoulli logits, Gaussian densities by hand."""
    with torch.no_grad():
        mu, logvar = vae.encoder(x).double().chunk(2, dim=-1)
        std = (0.5 * logvar).exp()
        z = mu + std * eps.double()  # (K, B, L)
        logits = vae.decoder(z.float().flatten(0, 1)).double().view(*z.shape[:2], -1)
        xf = x.flatten(1).double()
        log_px_z = (xf * logits - torch.nn.functional.softplus(logits)).sum(-1)
        log_pz = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_q = (-0.5 * eps.double() ** 2 - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        lw = log_px_z + log_pz - log_q
        return torch.logsumexp(lw, 0) - math.log(len(eps))


def test_chunked_evaluation_equals_unchunked_and_a_float64_reference() -> None:
    vae = digits_module().vae
    x = binary_batch(8)
    k = 103  # not a multiple of the chunk: the last chunk is short
    eps = torch.randn(k, 8, vae.latent_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        whole = estimators.iw_bound(ReplayNoise(vae, eps), x, k)
        chunked = estimators.iw_bound(ReplayNoise(vae, eps), x, k, chunk=10)
    assert torch.allclose(whole, chunked, atol=1e-5, rtol=0)
    assert torch.allclose(chunked.double(), reference_iw(vae, x, eps), atol=1e-3, rtol=0)


# ---------------------------------------------------------------- objectives and schedule
def test_kl_warmup_is_linear_and_beta_weights_the_kl() -> None:
    assert [objectives.kl_weight(0.5, 100, s) for s in (0, 50, 100, 1000)] == [0.0, 0.25, 0.5, 0.5]
    assert objectives.kl_weight(2.0, 0, 0) == 2.0
    module = digits_module(beta=0.0)
    x = binary_batch()
    torch.manual_seed(0)
    loss, terms = objectives.OBJECTIVES["elbo"](module.vae, x, module.cfg, 10)
    torch.manual_seed(0)
    recon = estimators.elbo(module.vae, x)["recon"]
    assert torch.allclose(loss, -recon.mean())  # beta 0: the KL term is gone from the loss
    assert torch.allclose(terms["elbo"], terms["recon"] - terms["kl"])  # but not from the ELBO
    assert terms["beta"].item() == 0.0


def test_iwae_objective_is_the_negative_mean_iw_bound() -> None:
    module = digits_module(objective="iwae", k=7)
    x = binary_batch()
    torch.manual_seed(4)
    loss, terms = objectives.OBJECTIVES["iwae"](module.vae, x, module.cfg, 0)
    torch.manual_seed(4)
    bound = estimators.iw_bound(module.vae, x, 7)
    assert torch.allclose(loss, -bound.mean(), atol=1e-4)
    assert torch.allclose(terms["iw"], bound, atol=1e-4)
    loss.backward()  # gradients reach the encoder through the reparameterised samples
    assert module.vae.encoder[1].weight.grad.abs().sum() > 0


def test_paper_schedule_has_3_to_the_i_epochs_per_stage() -> None:
    stages = Counter(schedules.iwae_stage(e) for e in range(3280))
    assert stages == {i: 3**i for i in range(8)}
    assert schedules.iwae_stage(10_000) == 7  # after the schedule: the last rate continues
    assert schedules.iwae_lr_factor(0) == 1.0
    assert schedules.iwae_lr_factor(3279) == pytest.approx(0.1)
    opt = digits_module(schedule="iwae").configure_optimizers()["optimizer"]
    assert opt.defaults["eps"] == 1e-4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"k": 0}, "k must be >= 1"),
        ({"objective": "iwea"}, 'did you mean "iwae"'),
        ({"stochastic_layers": 3}, "stochastic_layers"),
        ({"objective": "iwae", "beta": 0.5}, "elbo objective only"),
        ({"schedule": "cosine"}, "schedule"),
    ],
)
def test_bad_objective_settings_are_clear_errors(overrides: dict, message: str) -> None:
    with pytest.raises(VaeError, match=message):
        resolve(overrides=overrides)


# ---------------------------------------------------------------- end to end on digits
def metrics(run: Path) -> list[dict[str, str]]:
    import csv

    return list(csv.DictReader((run / "metrics.csv").open()))


def test_iwae_trains_and_eval_reports_iw_elbo_and_active_units(cli, tmp_path: Path) -> None:
    r = cli("train", "--objective", "iwae", "--k", "5", "--epochs", "4", "--latent-dim", "8",
            "--hidden-dim", "64", "--batch-size", "50", "--runs-dir", "runs", "--seed", "1")  # fmt: skip
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "digits-bernoulli" / "version_0"  # DATASET-LIKELIHOOD without -e
    iw = [float(row["train/iw_epoch"]) for row in metrics(run) if row.get("train/iw_epoch")]
    assert len(iw) == 4 and iw[-1] > iw[0] + 5, iw  # the IW bound (the objective) went up

    r = cli("eval", str(run), "--iw-samples", "50", "--chunk", "7", "--seed", "3")
    assert r.exit_code == 0, r.output
    res = json.loads((run / "eval.json").read_text())
    assert res["n_examples"] == 360 and res["iw_samples"] == 50
    assert res["iw"] >= res["elbo"] - 3 * res["elbo_stderr"]
    assert "binarised once" in res["data_protocol"] and res["peak_rss_mib"] > 0
    # active units against a direct computation over the same test images
    module = VAEModule.load_from_checkpoint(str(run / "checkpoints" / "best.ckpt")).eval()
    from vae_cli.data.datamodule import VAEDataModule

    dm = VAEDataModule(module.cfg)
    dm.setup("test")
    with torch.no_grad():
        mu = module.vae.posterior(dm.splits["test"]).mean.double()
    active = int((mu.var(0, unbiased=False) > 0.01).sum())
    assert res["active_units"] == active and res["active_units_per_layer"] == [active]
    assert "active units" in r.output and "IW bound (K=50)" in r.output


def test_two_stochastic_layers_train_eval_and_sample(cli, tmp_path: Path) -> None:
    r = cli("train", "--stochastic-layers", "2", "--objective", "iwae", "--k", "3", "--epochs", "1",
            "--latent-dim", "4", "--hidden-dim", "32", "--runs-dir", "runs")  # fmt: skip
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "digits-bernoulli" / "version_0"  # DATASET-LIKELIHOOD without -e
    module = VAEModule.load_from_checkpoint(str(run / "checkpoints" / "last.ckpt"))
    assert module.vae.layer_dims == (8, 4)  # z1 = 2 * latent_dim, z2 = latent_dim
    r = cli("eval", str(run), "--iw-samples", "20")
    assert r.exit_code == 0, r.output
    res = json.loads((run / "eval.json").read_text())
    assert res["latent_dims"] == [8, 4] and len(res["active_units_per_layer"]) == 2
    assert math.isfinite(res["iw"]) and math.isfinite(res["elbo"])
    r = cli("sample", str(run), "--n", "16", "--out", "s.png")
    assert r.exit_code == 0 and (tmp_path / "s.png").stat().st_size > 0, r.output


def test_bad_k_on_the_command_line_is_one_line(cli) -> None:
    r = cli("train", "--k", "0", "--runs-dir", "runs")
    assert r.exit_code == 2
    assert "k must be >= 1" in r.output and "Traceback" not in r.output
