"""What a person looks at: image grids, the ELBO-curve plot, rich tables."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.table import Table
from torch import Tensor
from torchvision.utils import make_grid

from vae_cli import runs
from vae_cli.errors import VaeError


def save_grid(
    images: Tensor | Sequence[Tensor], path: Path, nrow: int | None = None, padding: int = 2, gap: int = 8
) -> Path:
    """The one image writer: images in [0, 1], (N, C, H, W) -> one PNG grid with `padding`
    white pixels between cells. A sequence of such batches gives their grids side by side,
    `gap` white pixels apart (vae compare's mean | stochastic figures).

    One-channel images are written as a greyscale PNG (a third of the size of RGB), so that
    figures of noisy samples stay small enough to keep in docs/.
    """
    path = check_image_path(path)
    batches = [images] if isinstance(images, Tensor) else list(images)
    channels = batches[0].shape[1]
    grids = []
    for batch in batches:
        batch = batch.detach().cpu().float()
        n = nrow or max(1, math.ceil(math.sqrt(len(batch))))
        grids.append(make_grid(batch, nrow=n, padding=padding, pad_value=1.0)[:channels])
        grids.append(torch.ones(channels, grids[-1].shape[1], gap))
    picture = torch.cat(grids[:-1], dim=2)  # no gap after the last grid
    from PIL import Image

    array = picture.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if channels == 1 else array)
    with runs.atomic_file(path, "wb") as f:  # a killed command leaves no half image
        image.save(f, format=image_format(path))
    return path


def image_format(path: Path) -> str:
    from PIL import Image

    return Image.registered_extensions()[path.suffix.lower()]


def check_image_path(path: Path) -> Path:
    """An image file name whose extension PIL can write, and not a folder."""
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        raise VaeError(f"--out {path} is a folder: pass a file name such as {path / 'samples.png'}")
    writable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    if path.suffix.lower() not in writable:
        raise VaeError(
            f"--out {path}: {'no' if not path.suffix else 'unknown'} image extension "
            f"{path.suffix!r}; end the name with .png (or .jpg, .bmp, .tif, .webp)"
        )
    return path


def read_metrics(metrics_csv: Path) -> list[dict[str, str]]:
    with metrics_csv.open() as f:
        return list(csv.DictReader(f))


def plot_elbo_curves(metrics_csv: Path, out: Path) -> Path | None:
    """Per-epoch train and validation ELBO (nats per example) from Lightning's CSV log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_csv)
    curves = {}
    for key, label in (("train/elbo_epoch", "train"), ("val/elbo", "validation")):
        points = [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key)]
        if points:
            curves[label] = points
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for label, points in curves.items():
        ax.plot([e + 1 for e, _ in points], [v for _, v in points], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per example)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with runs.atomic_file(out, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return out


def metrics_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table
