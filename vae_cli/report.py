"""What a person looks at: image grids, the ELBO-curve plot, rich tables."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from rich.table import Table
from torch import Tensor
from torchvision.utils import save_image


def save_grid(images: Tensor, path: Path, nrow: int | None = None) -> Path:
    """images in [0, 1], (N, C, H, W) -> one PNG; 2-pixel white padding between cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    save_image(images.detach().cpu().float(), path, nrow=nrow, padding=2, pad_value=1.0)
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
    fig.savefig(out)
    plt.close(fig)
    return out


def metrics_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table
