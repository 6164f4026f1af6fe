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
        "import sys, vae_cli; assert 'torch' not in sys.modules, 'torch imported'; print(vae_cli.__version__)"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == vae_cli.__version__


def test_the_api_is_looked_up_on_first_use() -> None:
    # in this process (torch is loaded anyway): a fresh interpreter importing vae_cli.api
    # alone is tests/test_imports.py's job, and would cost ~8 s of torch + Lightning start-up
    from vae_cli import api

    assert (vae_cli.load, vae_cli.train, vae_cli.Model) == (api.load, api.train, api.Model)
    with pytest.raises(AttributeError, match="no_such_thing"):
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


# ---------------------------------------------------------------- inputs checked at the boundary
@pytest.fixture(scope="module")
def digits_model() -> vae_cli.Model:
    """An untrained 8x8 bernoulli model (4-D latent): the checks do not need trained weights."""
    from tests.conftest import digits_module

    return vae_cli.Model(digits_module(), Path("untrained.ckpt"), Path("untrained"))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.full((2, 1, 8, 8), 0.5), r"outside the support .*\{0, 1\}"),
        (torch.full((2, 1, 8, 8), float("nan")), "outside the support"),
        (torch.zeros(8, 64), r"shape \(8, 64\), expected \(N, 1, 8, 8\)"),
        (torch.zeros(1, 8, 8, 8), r"expected \(N, 1, 8, 8\)"),
        (torch.zeros(3, 1, 28, 28), r"shape \(3, 1, 28, 28\), expected \(N, 1, 8, 8\)"),
        (torch.zeros(0, 1, 8, 8), "N >= 1"),
        ([[0.0] * 8] * 8, "x is a list: pass a real-valued torch tensor or numpy array"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.bool), "torch.bool tensor"),
    ],
)
def test_bad_inputs_are_one_line_vae_errors(digits_model: vae_cli.Model, x, message: str) -> None:
    for method in (digits_model.elbo, digits_model.encode, digits_model.reconstruct):
        with pytest.raises(VaeError, match=message):
            method(x)
    with pytest.raises(VaeError, match=message):
        digits_model.iw_bound(x, k=2)


def test_inputs_of_any_real_dtype_or_numpy_score_as_float32(digits_model: vae_cli.Model) -> None:
    import numpy as np

    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(0))
    q = digits_model.encode(x)
    for same in (x.to(torch.uint8), x.double(), x.long(), x.numpy(), x.numpy().astype(np.uint8)):
        assert torch.equal(digits_model.encode(same).mean, q.mean)
    one = digits_model.encode(x[0])  # a single (C, H, W) example gets its batch dimension
    assert one.batch_shape == (1,) and torch.allclose(one.mean[0], q.mean[0], atol=1e-6)
    assert digits_model.elbo(x.double()).dtype == torch.float32


def test_discrete_likelihood_refuses_non_integers() -> None:
    from tests.conftest import digits_module

    model = vae_cli.Model(digits_module(likelihood="categorical"), Path("u.ckpt"), Path("u"))
    assert model.elbo(torch.randint(0, 256, (2, 1, 8, 8))).shape == (2,)
    with pytest.raises(VaeError, match=r"the integers 0\.\.255"):
        model.elbo(torch.full((2, 1, 8, 8), 3.5))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x: m.iw_bound(x, 0), "k must be a whole number >= 1"),
        (lambda m, x: m.iw_bound(x, -3), "k must be a whole number >= 1"),
        (lambda m, x: m.iw_bound(x, 2.5), "k must be a whole number >= 1"),
        (lambda m, x: m.iw_bound(x, 4, chunk=0), "chunk must be a whole number >= 1"),
        (lambda m, x: m.sample(-1), "n must be a whole number >= 1"),
        (lambda m, x: m.sample(2.5), "n must be a whole number >= 1"),
        (lambda m, x: m.sample(0), "n must be a whole number >= 1"),
        (lambda m, x: m.sample(4, temperature=float("nan")), "temperature must be a finite number > 0"),
        (lambda m, x: m.sample(4, temperature=0), "temperature must be a finite number > 0"),
        (lambda m, x: m.sample(4, temperature=-1), "temperature must be a finite number > 0"),
        (lambda m, x: m.sample(4, temperature=float("inf")), "temperature must be a finite number > 0"),
    ],
)
def test_bad_counts_and_temperatures_are_refused(digits_model: vae_cli.Model, call, message: str) -> None:
    with pytest.raises(VaeError, match=message):
        call(digits_model, torch.zeros(2, 1, 8, 8))


def test_integer_scalars_of_numpy_and_torch_are_counts(digits_model: vae_cli.Model) -> None:
    import numpy as np

    x = torch.zeros(2, 1, 8, 8)
    assert digits_model.iw_bound(x, np.int64(3), chunk=np.int32(2)).shape == (2,)
    assert digits_model.sample(torch.tensor(3)).shape == (3, 1, 8, 8)
    with pytest.raises(VaeError, match="k must be a whole number"):
        digits_model.iw_bound(x, np.float64(3.0))


@pytest.mark.parametrize(
    ("z", "message"),
    [
        (lambda d: torch.zeros(2, d + 1), r"z has shape \(2, {d1}\), expected \(N, {d}\)"),
        (lambda d: torch.zeros(2, 3, d), r"expected \(N, {d}\)"),
        (lambda d: torch.zeros(0, d), "N >= 1"),
        (lambda d: torch.full((2, d), float("nan")), "NaN or infinite"),
        (lambda d: [0.0] * d, "z is a list"),
    ],
)
def test_decode_checks_its_latent_points(digits_model: vae_cli.Model, z, message: str) -> None:
    d = digits_model.module.vae.latent_dim
    with pytest.raises(VaeError, match=message.format(d=d, d1=d + 1)):
        digits_model.decode(z(d))
    assert digits_model.decode(torch.zeros(d)).mean.shape == (1, 1, 8, 8)  # one point, no batch axis


def test_dir_lists_the_lazy_api() -> None:
    assert {"load", "train", "Model", "__version__"} <= set(dir(vae_cli))


def test_train_requires_a_config_or_a_dict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for bad in (None, "quickstart", [("epochs", 1)]):
        with pytest.raises(TypeError, match="config must be a Config or a dict"):
            vae_cli.train(bad)  # type: ignore[arg-type]
    assert not (tmp_path / "runs").exists()


def test_train_names_its_settings_in_errors() -> None:
    with pytest.raises(VaeError, match=r'unknown key "latent_dims" in the settings given to vae_cli\.train'):
        vae_cli.train({"latent_dims": 2})


@pytest.mark.slow
def test_a_checkpoint_copied_from_another_model_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    for name in ("best.ckpt", "last.ckpt"):
        if (run / "checkpoints" / name).exists():
            state = torch.load(run / "checkpoints" / name, weights_only=True)
            state["hyper_parameters"]["config"]["latent_dim"] = 7
            torch.save(state, run / "checkpoints" / name)
    for path in (run, run / "checkpoints" / "last.ckpt"):
        with pytest.raises(VaeError, match=r"its latent_dim is 7 but the run's config\.yaml says 2"):
            vae_cli.load(path)
