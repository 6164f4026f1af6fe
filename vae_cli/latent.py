"""`vae latent RUN`: pictures of a trained model's latent space.

Written into a new folder (RUN/latent, else RUN/latent-1, ...), never over existing files:

    interpolations.png  decoded straight lines between the posterior means of test pairs,
                        as E[x|z] and as draws x ~ p(x|z), the two inputs at the ends
    traversals.png      the most active latent units (Burda et al. 2016's statistic
                        A_u = Cov_x E_q[z_u|x]), each swept from -3 to +3 prior standard
                        deviations around a base code, the other units held fixed
    latent_dim 1:  manifold.png  E[x|z] at prior quantiles z = Phi^-1(u), one row
                   strip.png     posterior means of the test split along z, one row per class
    latent_dim 2:  manifold.png  E[x|z] on a grid of prior quantiles z = Phi^-1(u)
                                 (Kingma & Welling 2014, fig. 4)
                   scatter.png   posterior means of the test split, coloured by class
    latent_dim > 2: embedding.png  PCA and t-SNE of the posterior means, coloured by class

The figures are drawn in a hidden temporary folder that is renamed into place at the end,
so a failure leaves no half-written latent folder.

Classes come from data/labels.py (the data's own labels, else a built-in dataset's) where
the data has them; otherwise one colour.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import Tensor
from torch.distributions import Normal

from vae_cli import report, runs
from vae_cli.api import Model
from vae_cli.errors import VaeError
from vae_cli.model import activity

SPAN = 3.0  # traversals: +-3 prior standard deviations (the prior is N(0, I))


def fresh_folder(parent: Path, name: str = "latent") -> Path:
    """parent/name, or parent/name-1, -2, ...: the first that does not exist, created
    atomically (mkdir), so two commands at once never share a folder."""
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(10_000):
        folder = parent / (name if i == 0 else f"{name}-{i}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise VaeError(f"{parent} holds 10000 {name} folders already: pass --out a fresh folder")


@torch.no_grad()
def posterior_means(model: Model, x: Tensor, batch: int = 1000) -> Tensor:
    return torch.cat([model.encode(x[i : i + batch]).mean for i in range(0, len(x), batch)]).cpu()


@torch.no_grad()
def interpolation_panels(
    model: Model, x: Tensor, mu: Tensor, pairs: Tensor, steps: int, labels: list[str], seed: int
) -> list[report.Panel]:
    """Rows [x_a, decode((1-t) mu_a + t mu_b) for t in 0..1, x_b], as means and as draws."""
    t = torch.linspace(0, 1, steps).unsqueeze(1)
    z = torch.cat([(1 - t) * mu[a] + t * mu[b] for a, b in pairs.tolist()])
    dist = model.decode(z)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        draws = dist.sample()
    panels = []
    for decoded, title in ((dist.mean, "decoder means E[x|z]"), (draws, "samples x ~ p(x|z)")):
        rows = []
        for i, (a, b) in enumerate(pairs.tolist()):
            ends = model.to_image(x[[a, b]])
            rows += [ends[:1], model.to_image(decoded[i * steps : (i + 1) * steps]), ends[1:]]
        panels.append(report.Panel(torch.cat(rows), title, steps + 2, labels))
    return panels


@torch.no_grad()
def traversal_panel(model: Model, base: Tensor, variances: Tensor, dims: int, steps: int) -> report.Panel:
    """One row per unit, most active first: base with z_u = base_u + v, v in [-3, 3]."""
    order = torch.argsort(variances, descending=True)[:dims]
    values = torch.linspace(-SPAN, SPAN, steps)
    z = base.repeat(len(order) * steps, 1)
    for i, u in enumerate(order.tolist()):
        z[i * steps : (i + 1) * steps, u] += values
    images = model.to_image(model.decode(z).mean)
    # 3 significant figures (a fixed 2 decimals showed A=0.01 for every quiet unit), and
    # which side of the activity threshold each unit is on
    state = {True: "active", False: "inactive"}
    labels = [
        f"z{u} A={variances[u]:.3g} {state[bool(variances[u] > activity.THRESHOLD)]}" for u in order.tolist()
    ]
    title = f"z_u = base_u + v, v from -{SPAN:g} to +{SPAN:g} (left to right)"
    return report.Panel(images, title, steps, labels)


def prior_quantile_grid(n: int) -> Tensor:
    """(n * n, 2) codes in row-major image order: row i, column j is
    (Phi^-1((j + 0.5) / n), Phi^-1(1 - (i + 0.5) / n)), Phi the standard normal CDF."""
    q = Normal(0.0, 1.0).icdf((torch.arange(n) + 0.5) / n)
    z1, z2 = torch.meshgrid(q, q.flip(0), indexing="xy")
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)


@torch.no_grad()
def manifold_row_panel(model: Model, n: int) -> report.Panel:
    """latent_dim 1: E[x|z] at the n prior quantiles z = Phi^-1((j + 0.5) / n), left to right."""
    z = Normal(0.0, 1.0).icdf((torch.arange(n) + 0.5) / n).unsqueeze(1)
    images = model.to_image(model.decode(z).mean)
    return report.Panel(
        images, f"E[x|z] at {n} prior quantiles z = Phi^-1((j + 0.5) / {n}), left to right", n
    )


def plot_strip(mu: Tensor, labels: Tensor | None, caption: str, path: Path) -> Path:
    """latent_dim 1: posterior means along z, one row of points (jittered) per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = mu[:, 0]
    classes = labels.unique().tolist() if labels is not None else [None]
    g = torch.Generator().manual_seed(0)
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.35 * len(classes)), dpi=90)
    for row, c in enumerate(classes):
        sel = values if c is None else values[labels == c]
        jitter = (torch.rand(len(sel), generator=g) - 0.5) * 0.5
        ax.scatter(sel, row + jitter, s=4, alpha=0.6)
    ax.set_yticks(range(len(classes)), ["all" if c is None else str(c) for c in classes])
    ax.set_ylabel("class" if labels is not None else "")
    ax.set_xlabel("E_q[z|x]")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("posterior means E_q[z|x], test split, by class", fontsize=9)
    fig.suptitle(caption + ("" if labels is not None else "\n(no class labels for this dataset)"), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


@torch.no_grad()
def manifold_panel(model: Model, n: int) -> report.Panel:
    """E[x|z] on an n x n grid of prior quantiles: column j has z1 = Phi^-1((j + 0.5) / n),
    row i has z2 = Phi^-1(1 - (i + 0.5) / n) (so z2 grows upwards, as on a plot)."""
    images = model.to_image(model.decode(prior_quantile_grid(n)).mean)
    return report.Panel(images, f"E[x|z] at prior quantiles, {n} x {n}: z1 left->right, z2 bottom->top", n)


def _scatter(ax, points: Tensor, labels: Tensor | None, title: str) -> None:
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.6)
    else:
        for c in labels.unique().tolist():
            sel = labels == c
            ax.scatter(points[sel, 0], points[sel, 1], s=4, alpha=0.7, label=str(c))
        ax.legend(markerscale=3, fontsize=7, title="class", title_fontsize=7, loc="best")
    ax.set_title(title, fontsize=9)


def plot_points(panels: list[tuple[Tensor, str]], labels: Tensor | None, caption: str, path: Path) -> Path:
    """Scatter plots of 2-D points (one subplot per (points, title)), coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), dpi=90, squeeze=False)
    for ax, (points, title) in zip(axes[0], panels, strict=True):
        _scatter(ax, points, labels, title)
    fig.suptitle(caption + ("" if labels is not None else "\n(no class labels for this dataset)"), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def embeddings(mu: Tensor, seed: int) -> list[tuple[Tensor, str]]:
    """PCA and t-SNE (scikit-learn) of the posterior means."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    data = mu.double().numpy()
    pca = PCA(n_components=2, random_state=seed).fit(data)
    explained = pca.explained_variance_ratio_.sum()
    perplexity = min(30.0, (len(data) - 1) / 3)
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(data)
    return [
        (torch.from_numpy(pca.transform(data)), f"PCA of E_q[z|x] ({explained:.0%} of the variance)"),
        (torch.from_numpy(tsne), f"t-SNE of E_q[z|x] (perplexity {perplexity:g})"),
    ]


def write_latent_figures(
    model: Model,
    out_parent: Path,
    pairs: int = 6,
    steps: int = 10,
    dims: int = 8,
    n_embed: int = 2000,
    grid: int = 20,
    seed: int = 0,
) -> list[Path]:
    """Every figure of the module docstring, in a fresh folder under out_parent."""
    if model.config.stochastic_layers != 1:
        raise VaeError("vae latent draws 1-stochastic-layer models; this run has 2 layers")
    for name, value, low in (("--pairs", pairs, 1), ("--steps", steps, 2), ("--dims", dims, 1),
                             ("--n-embed", n_embed, 5), ("--grid", grid, 2)):  # fmt: skip
        if value < low:
            raise VaeError(f"{name} must be >= {low}, got {value}")
    model.module.cpu()
    x = model.data.cpu()
    if len(x) < 2:
        raise VaeError("the test split has fewer than 2 examples: nothing to interpolate")
    labels = model.labels
    mu = posterior_means(model, x)
    out_parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_parent, prefix=".latent-"))
    work.chmod(runs.umask_mode(folder=True))  # mkdtemp's 0700 would hide the figures from colleagues
    try:
        names = [path.name for path in draw_figures(model, x, labels, mu, work, pairs, steps, dims,
                                                    n_embed, grid, seed)]  # fmt: skip
        folder = fresh_folder(out_parent)
        os.replace(work, folder)  # onto the empty folder just reserved: atomic on POSIX
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return [folder / name for name in names]


def draw_figures(
    model: Model,
    x: Tensor,
    labels: Tensor | None,
    mu: Tensor,
    folder: Path,
    pairs: int,
    steps: int,
    dims: int,
    n_embed: int,
    grid: int,
    seed: int,
) -> list[Path]:
    """The figures of write_latent_figures, into `folder`."""
    caption = report.run_caption(model.run_dir, model.config.likelihood, model.step)
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(x), generator=g)[: 2 * pairs]
    pair_idx = chosen[: len(chosen) // 2 * 2].view(-1, 2)

    def name(i: int) -> str:
        return str(int(labels[i])) if labels is not None else f"#{i}"

    row_names = [f"{name(a)}->{name(b)}" for a, b in pair_idx.tolist()]
    panels = interpolation_panels(model, x, mu, pair_idx, steps, row_names, seed)
    what = "interpolations between posterior means of test pairs (inputs at both ends)"
    written = [report.save_panels(panels, folder / "interpolations.png", f"{what}\n{caption}")]

    variances = activity.unit_variances(mu.double().sum(0), (mu.double() ** 2).sum(0), len(mu)).float()
    active, base = activity.count_active(variances), int(chosen[0])
    what = (f"traversals of the most active units ({active}/{len(variances)} active: "
            f"A_u = Cov_x E_q[z_u|x] > {activity.THRESHOLD}), around E_q[z|x] of test #{base}")  # fmt: skip
    panel = traversal_panel(model, mu[base].unsqueeze(0), variances, dims, 11)
    written.append(report.save_panels([panel], folder / "traversals.png", f"{what}\n{caption}"))

    if mu.shape[1] == 1:
        what = "the learned 1-D manifold"
        manifold = [manifold_row_panel(model, grid)]
        written.append(report.save_panels(manifold, folder / "manifold.png", f"{what}\n{caption}"))
        written.append(plot_strip(mu, labels, caption, folder / "strip.png"))
    elif mu.shape[1] == 2:
        what = "the learned manifold (Kingma & Welling 2014, fig. 4)"
        manifold = [manifold_panel(model, grid)]
        written.append(report.save_panels(manifold, folder / "manifold.png", f"{what}\n{caption}"))
        points = [(mu, "posterior means E_q[z|x], test split")]
        written.append(plot_points(points, labels, caption, folder / "scatter.png"))
    else:
        keep = torch.randperm(len(mu), generator=g)[:n_embed]
        kept_labels = labels[keep] if labels is not None else None
        caption = f"{caption} · {len(keep)} test examples"
        written.append(
            plot_points(embeddings(mu[keep], seed), kept_labels, caption, folder / "embedding.png")
        )
    return written
