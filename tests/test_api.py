"""vae_cli.load / vae_cli.train: the Python API against independent references (2-D quadrature
of log p(x), closed-form KL, torch.distributions), and `import vae_cli` without torch."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal

import vae_cli
from vae_cli.errors import VaeError

ROOT = Path(__file__).resolve().parent.parent


def test_import_vae_cli_does_not_import_torch() -> None:
    code = (
        "import sys, vae_cli; assert 'torch' not in sys.modules, 'torch imported'; "
        "f = vae_cli.load; assert 'torch' in sys.modules and callable(f) and callable(vae_cli.train); "
        "print(vae_cli.__version__)"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    with pytest.raises(AttributeError):
        vae_cli.no_such_thing  # noqa: B018


def log_px_by_quadrature(model: vae_cli.Model, x: torch.Tensor, n: int = 301) -> torch.Tensor:
    """log p(x) = log sum over a 2-D grid of p(x|z) p(z) dz around each posterior, float64:
    an independent reference for the bounds (no importance weights, no q in the integrand)."""
    out = []
    with torch.no_grad():
        q = model.encode(x)
        for i in range(len(x)):
            mu, sd = q.mean[i].double(), q.stddev[i].double()
            half = 8 * sd.clamp_min(0.05)
            axes = [torch.linspace(float(mu[d] - half[d]), float(mu[d] + half[d]), n) for d in range(2)]
            z1, z2 = torch.meshgrid(*axes, indexing="ij")
            z = torch.stack([z1.reshape(-1), z2.reshape(-1)], 1)
            logits = model.module.vae.decoder(z.float()).double().view(len(z), -1)
            log_lik = Bernoulli(logits=logits).log_prob(x[i].double().view(1, -1).expand_as(logits)).sum(1)
            log_prior = Normal(0.0, 1.0).log_prob(z).sum(1)
            cell = float((axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0]))
            out.append(torch.logsumexp(log_lik + log_prior, 0) + math.log(cell))
    return torch.stack(out)


@pytest.mark.slow
def test_loaded_model_bounds_match_quadrature(tiny_run: Path) -> None:
    model = vae_cli.load(tiny_run)
    assert model.config.latent_dim == 2 and model.run_dir == tiny_run and model.step > 0
    x = model.data[:4]
    exact = log_px_by_quadrature(model, x)
    torch.manual_seed(0)
    iw = model.iw_bound(x, k=5000).double()
    assert iw.shape == (4,)
    assert torch.allclose(iw, exact, atol=0.05), (iw, exact)
    elbos = torch.stack([model.elbo(x) for _ in range(2000)]).double()
    assert elbos.shape == (2000, 4)
    # the ELBO is a lower bound (to within 4 standard errors of 2000 one-sample draws) ...
    assert (elbos.mean(0) < exact + 4 * elbos.std(0) / math.sqrt(2000)).all()
    # ... and equals E_q log p(x|z) - KL(q || N(0, I)), computed here with torch.distributions
    q = model.encode(x)
    kl = 0.5 * (q.variance + q.mean**2 - 1 - q.variance.log()).sum(1)
    z = q.sample((4000,))
    logits = model.module.vae.decoder(z.view(-1, 2)).view(4000, 4, -1)
    recon = Independent(Bernoulli(logits=logits), 1).log_prob(x.view(1, 4, -1)).mean(0)
    assert torch.allclose(elbos.mean(0).float(), recon - kl, atol=0.1)


@pytest.mark.slow
def test_model_api_shapes_and_types(tiny_run: Path) -> None:
    model = vae_cli.load(tiny_run / "checkpoints" / "last.ckpt").to("cpu")
    assert isinstance(model, vae_cli.Model)
    x = model.data
    assert x.shape == (360, 1, 8, 8) and set(x.unique().tolist()) <= {0.0, 1.0}  # binarised test split
    q = model.encode(x[:5])
    assert isinstance(q, Independent) and q.batch_shape == (5,) and q.event_shape == (2,)
    p = model.decode(q.mean)
    assert p.batch_shape == (5,) and p.mean.shape == (5, 1, 8, 8)
    assert ((p.mean > 0) & (p.mean < 1)).all()
    assert torch.equal(model.reconstruct(x[:5]), p.mean.detach())
    draws = model.reconstruct(x[:5], stochastic=True)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    torch.manual_seed(1)
    cold = model.sample(2000, temperature=0.01)
    # T -> 0: every z is ~0, so every mean image is E[x|z=0]
    assert torch.allclose(cold, model.decode(torch.zeros(1, 2)).mean.detach().expand_as(cold), atol=1e-2)
    assert model.sample(3, stochastic=True).shape == (3, 1, 8, 8)
    assert model.to_image(x[:2]).max() <= 1


def test_load_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(VaeError, match="does not exist"):
        vae_cli.load(tmp_path / "nope")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(VaeError, match="not a readable vae-cli checkpoint"):
        vae_cli.load(bad)


def test_fit_rejects_unknown_settings() -> None:
    with pytest.raises(VaeError, match="latent_dims"):
        vae_cli.train({"latent_dims": 2})


@pytest.mark.slow
def test_fit_wrote_a_run_the_cli_can_read(tiny_run: Path) -> None:
    import yaml

    saved = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert (saved["latent_dim"], saved["dataset"], saved["epochs"]) == (2, "digits", 3)
    assert (tiny_run / "checkpoints" / "last.ckpt").exists()
