"""`vae latent`: prior quantiles, embeddings, traversals and the command end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import norm

import vae_cli
from vae_cli import latent


def test_prior_quantile_grid_matches_scipy() -> None:
    n = 7
    z = latent.prior_quantile_grid(n).view(n, n, 2).double()
    u = (np.arange(n) + 0.5) / n
    for i in range(n):
        for j in range(n):
            assert z[i, j, 0].item() == pytest.approx(norm.ppf(u[j]), abs=1e-5)  # z1 left to right
            assert z[i, j, 1].item() == pytest.approx(norm.ppf(1 - u[i]), abs=1e-5)  # z2 bottom to top


def test_embeddings_recover_the_principal_plane() -> None:
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(200, 5, generator=g) * torch.tensor([3.0, 2.0, 0.01, 0.01, 0.01])
    (pca, pca_title), (tsne, _) = latent.embeddings(mu, seed=0)
    assert pca.shape == tsne.shape == (200, 2)
    # the first two axes hold ~all of the variance, so the PCA plane is the (z0, z1) plane
    assert "100%" in pca_title
    assert abs(np.corrcoef(pca[:, 0].numpy(), mu[:, 0].numpy())[0, 1]) > 0.99


@pytest.mark.slow
def test_latent_command_writes_every_figure_without_overwriting(tiny_run: Path, cli) -> None:
    first = cli("latent", tiny_run, "--pairs", "3", "--grid", "12")
    assert first.exit_code == 0, first.output
    folder = tiny_run / "latent"
    names = {p.name for p in folder.iterdir()}
    assert names == {"interpolations.png", "traversals.png", "manifold.png", "scatter.png"}
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    manifold = Image.open(folder / "manifold.png")
    assert manifold.width >= 400 and manifold.height > manifold.width  # 12 x 12 grid + caption
    trav = Image.open(folder / "traversals.png")
    assert trav.width >= 400
    second = cli("latent", tiny_run, "--pairs", "2", "--seed", "1")
    assert second.exit_code == 0, second.output
    assert str(tiny_run / "latent-1" / "interpolations.png") in second.output.replace("\n", "")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # untouched
    bad = cli("latent", tiny_run, "--steps", "1")
    assert bad.exit_code == 2 and "--steps must be >= 2" in bad.output


@pytest.mark.slow
def test_traversals_rank_units_by_activity(tiny_run: Path) -> None:
    model = vae_cli.load(tiny_run)
    mu = latent.posterior_means(model, model.data)
    variances = mu.double().var(0, unbiased=False)  # Cov_x E_q[z_u|x], computed directly
    panel = latent.traversal_panel(model, mu[:1], variances.float(), dims=2, steps=5)
    order = torch.argsort(variances, descending=True).tolist()
    assert [lab.split()[0] for lab in panel.row_labels] == [f"z{u}" for u in order]
    assert panel.images.shape == (10, 1, 8, 8)
    # the middle column (v = 0) is the base code's decoder mean in both rows
    base = model.to_image(model.decode(mu[:1]).mean.detach())
    assert torch.allclose(panel.images[2], base[0], atol=1e-6)
    assert torch.allclose(panel.images[7], base[0], atol=1e-6)


def untrained_model(tmp_path: Path, latent_dim: int) -> vae_cli.Model:
    """An untrained 8x8 digits model: its figures are drawn from the built-in (offline) digits,
    no training needed; step is set as a loaded checkpoint would give it."""
    from vae_cli.settings import Config
    from vae_cli.training.module import VAEModule

    cfg = Config(dataset="digits", latent_dim=latent_dim, hidden_dim=32).validate()
    model = vae_cli.Model(VAEModule(cfg.to_dict()), tmp_path / "u.ckpt", tmp_path)
    model.__dict__["step"] = 0  # functools.cached_property: no checkpoint file to read
    return model


def test_one_dimensional_latent_space_gets_its_own_figures(tmp_path: Path) -> None:
    model = untrained_model(tmp_path, latent_dim=1)
    written = latent.write_latent_figures(model, tmp_path / "out", pairs=2, steps=4, n_embed=50, grid=9)
    folder = tmp_path / "out" / "latent"
    assert {p.name for p in written} == {"interpolations.png", "traversals.png", "manifold.png", "strip.png"}
    assert all(p.parent == folder and p.is_file() for p in written)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["latent"]  # no temporary folder left
    manifold = Image.open(folder / "manifold.png")
    assert manifold.width >= 9 * 40  # 9 decoded prior quantiles in one row, cells >= 40 px
    # the manifold row is E[x|z] at z = Phi^-1((j + 0.5) / 9), checked against scipy's quantiles
    panel = latent.manifold_row_panel(model, 9)
    z = torch.tensor(norm.ppf((np.arange(9) + 0.5) / 9), dtype=torch.float32).unsqueeze(1)
    assert torch.allclose(panel.images, model.to_image(model.decode(z).mean.detach()), atol=1e-6)


def test_a_failed_figure_leaves_no_partial_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = untrained_model(tmp_path, latent_dim=3)

    def broken(*args, **kwargs):
        raise ValueError("t-SNE failed")

    monkeypatch.setattr(latent, "embeddings", broken)
    with pytest.raises(ValueError, match="t-SNE failed"):
        latent.write_latent_figures(model, tmp_path / "out", pairs=2, steps=3, n_embed=50)
    assert list((tmp_path / "out").iterdir()) == []


def test_traversal_labels_show_three_significant_figures_and_activity(tmp_path: Path) -> None:
    model = untrained_model(tmp_path, latent_dim=3)
    variances = torch.tensor([0.5, 0.00421, 0.0123])
    panel = latent.traversal_panel(model, torch.zeros(1, 3), variances, dims=3, steps=3)
    assert list(panel.row_labels) == ["z0 A=0.5 active", "z2 A=0.0123 active", "z1 A=0.00421 inactive"]


@pytest.mark.slow
def test_latent_refuses_a_checkpoint_copied_from_another_model(tiny_run: Path, tmp_path: Path, cli) -> None:
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)
        state["hyper_parameters"]["config"]["latent_dim"] = 7
        torch.save(state, ckpt)
    before = sorted(p.name for p in run.iterdir())
    result = cli("latent", run)
    assert result.exit_code == 2
    assert "its latent_dim is 7 but the run's config.yaml says 2" in " ".join(result.output.split())
    assert sorted(p.name for p in run.iterdir()) == before  # no new latent folder


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_the_latent_folder_follows_the_umask(tmp_path: Path, umask: int) -> None:
    """Drawn in a mkdtemp folder (always 0700) and renamed: it must end with mkdir()'s mode."""
    import os

    model = untrained_model(tmp_path, latent_dim=1)
    old = os.umask(umask)
    try:
        latent.write_latent_figures(model, tmp_path / "out", pairs=2, steps=3, n_embed=50, grid=3)
        (tmp_path / "plain").mkdir()  # what mkdir() gives: the reference
    finally:
        os.umask(old)
    assert (tmp_path / "out" / "latent").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
