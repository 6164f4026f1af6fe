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
