"""What a person looks at: image grids, the ELBO-curve plot, rich tables."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from rich.table import Table
from torch import Tensor
from torchvision.utils import save_image

from vae_cli import runs
from vae_cli.errors import VaeError


def save_grid(images: Tensor, path: Path, nrow: int | None = None) -> Path:
    """images in [0, 1], (N, C, H, W) -> one PNG; 2-pixel white padding between cells.
    Written atomically (a killed command leaves no half image)."""
    path = check_image_path(path)
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    with runs.atomic_file(path, "wb") as f:
        save_image(images.detach().cpu().float(), f, format=image_format(path), nrow=nrow, padding=2,
                   pad_value=1.0)  # fmt: skip
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
