"""What a person looks at: image grids, the ELBO-curve plot, rich tables.

Every image figure goes through `render`: cells are upscaled by an integer factor
(nearest neighbour, so pixels stay pixels) until a grid is about MIN_WIDTH pixels wide,
laid out with torchvision's make_grid, and framed with PIL text: a caption naming the run,
the likelihood and the checkpoint step, a title per panel, and optional row labels
("input" / "output", "z3", ...). Greyscale data is saved as a greyscale PNG (small files).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont
from rich.table import Table

from vae_cli import runs
from vae_cli.errors import VaeError

if TYPE_CHECKING:  # torch only when a figure is drawn: `vae --help` stays fast
    from torch import Tensor

MIN_WIDTH = 400  # px: a default grid is upscaled to at least about this width
MIN_CELL = 40  # px: and every cell to at least this size, so an 8x8 digit stays readable
PAD = 2  # px between cells
# Mid-grey lines between cells: white (or black) ones merge with the white (black) pixels of
# binary images, and a grid of Bernoulli draws reads as one noisy block.
PAD_VALUE = 0.5
FONT_SIZE = 14
MARGIN = 6  # px around text


@dataclass(frozen=True)
class Panel:
    """One grid of a figure: images in [0, 1] (N, C, H, W), `nrow` per row, a title, and
    optionally one label per row (then N must be len(row_labels) * nrow)."""

    images: Tensor
    title: str = ""
    nrow: int | None = None
    row_labels: Sequence[str] = field(default_factory=tuple)

    def columns(self) -> int:
        return self.nrow or max(1, math.ceil(math.sqrt(len(self.images))))


def scale_for(width: int, columns: int, min_width: int = MIN_WIDTH) -> int:
    """The smallest integer factor that makes `columns` cells of `width` px (with padding)
    at least min_width px wide."""
    return max(1, math.ceil((min_width - (columns + 1) * PAD) / (columns * width)))


def grid_tensor(images: Tensor, nrow: int, scale: int = 1) -> Tensor:
    """(N, C, H, W) in [0, 1] -> one (C, H', W') grid, each pixel repeated scale x scale."""
    import torch
    from torchvision.utils import make_grid

    images = images.detach().cpu().float().clamp(0, 1)
    missing = -len(images) % nrow  # make_grid fills a short last row with the separators' grey,
    if missing and len(images) > nrow:  # which would read as images of 0.5: blank cells instead
        images = torch.cat([images, images.new_ones(missing, *images.shape[1:])])
    if scale > 1:
        images = images.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    return make_grid(images, nrow=nrow, padding=PAD, pad_value=PAD_VALUE)


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


def font_width(text: str) -> float:
    """Width in px of text in the figure font."""
    return _font().getlength(text)


def _split_long(word: str, width_px: int) -> list[str]:
    """A word wider than width_px (a long path) in pieces that fit, cut after a "/" where
    one falls in the piece: a caption is wrapped, never cut off at the figure's edge."""
    font, pieces = _font(), []
    while font.getlength(word) > width_px and len(word) > 1:
        end = max([1] + [i for i in range(1, len(word)) if font.getlength(word[:i]) <= width_px])
        slash = word.rfind("/", 0, end)
        end = slash + 1 if slash > 0 else end
        pieces.append(word[:end])
        word = word[end:]
    return [*pieces, word]


def _wrap(text: str, width_px: int) -> list[str]:
    """Greedy word wrap to what fits in width_px with the figure font."""
    font, lines = _font(), []
    for part in text.splitlines():
        line = ""
        words = [piece for word in part.split(" ") for piece in _split_long(word, width_px - 2 * MARGIN)]
        for word in words:
            trial = f"{line} {word}" if line else word
            if line and font.getlength(trial) > width_px - 2 * MARGIN:
                lines.append(line)
                trial = word
            line = trial
        lines.append(line)
    return lines


def _text_block(lines: list[str], width: int, mode: str) -> Image.Image:
    line_h = FONT_SIZE + 4
    block = Image.new(mode, (width, len(lines) * line_h + 2 * MARGIN), "white")
    draw = ImageDraw.Draw(block)
    for i, line in enumerate(lines):
        draw.text((MARGIN, MARGIN + i * line_h), line, fill="black", font=_font())
    return block


def _panel_image(panel: Panel, scale: int, mode: str) -> Image.Image:
    cols = panel.columns()
    grid = grid_tensor(panel.images, cols, scale)
    array = grid.mul(255).round().byte().permute(1, 2, 0).numpy()
    body = Image.fromarray(array[..., 0] if mode == "L" else array).convert(mode)
    if panel.row_labels:
        font = _font()
        label_w = int(max(font_width(t) for t in panel.row_labels)) + 2 * MARGIN
        framed = Image.new(mode, (label_w + body.width, body.height), "white")
        framed.paste(body, (label_w, 0))
        draw = ImageDraw.Draw(framed)
        cell_h = panel.images.shape[-2] * scale + PAD
        for i, label in enumerate(panel.row_labels):
            y = PAD + i * cell_h + cell_h // 2
            draw.text((MARGIN, y), label, fill="black", font=font, anchor="lm")
        body = framed
    if not panel.title:
        return body
    title = _text_block(_wrap(panel.title, body.width), body.width, mode)
    out = Image.new(mode, (body.width, title.height + body.height), "white")
    out.paste(title, (0, 0))
    out.paste(body, (0, title.height))
    return out


def render(panels: Sequence[Panel], caption: str = "", min_width: int = MIN_WIDTH) -> Image.Image:
    """Panels side by side under a caption; all panels share one upscale factor, chosen
    so that the widest panel's grid is at least min_width / len(panels) px wide."""
    mode = "L" if all(p.images.shape[1] == 1 for p in panels) else "RGB"
    per_panel = min_width // len(panels)
    scale = max(
        max(scale_for(p.images.shape[-1], p.columns(), per_panel), math.ceil(MIN_CELL / p.images.shape[-1]))
        for p in panels
    )
    images = [_panel_image(p, scale, mode) for p in panels]
    gap = 12
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    top = _text_block(_wrap(caption, width), width, mode) if caption else None
    height = max(im.height for im in images) + (top.height if top else 0)
    out = Image.new(mode, (width, height), "white")
    y = 0
    if top is not None:
        out.paste(top, (0, 0))
        y = top.height
    x = 0
    for im in images:
        out.paste(im, (x, y))
        x += im.width + gap
    return out


def save_image_file(image: Image.Image, path: Path, replace: bool = True) -> Path:
    """Written atomically (a killed command leaves no half image), in the format of its name.

    replace=False (what a command's --out or a new name asks for): an existing file is never
    replaced, even one another command wrote a moment ago; the finished temporary file is
    hard-linked into place, which fails if the name is taken."""
    path = check_image_path(path)
    if replace:
        with runs.atomic_file(path, "wb") as f:
            image.save(f, format=image_format(path), optimize=True)
        return path
    check_new_image_path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        with runs.atomic_file(Path(tmp) / path.name, "wb") as f:
            image.save(f, format=image_format(path), optimize=True)
        try:
            os.link(Path(tmp) / path.name, path)
        except FileExistsError:
            check_new_image_path(path)  # raises: the name was taken meanwhile
            raise
        except OSError:  # a file system without hard links: checked just above, then renamed
            os.replace(Path(tmp) / path.name, check_new_image_path(path))
    return path


def save_grid(
    images: Tensor,
    path: Path,
    nrow: int | None = None,
    caption: str = "",
    title: str = "",
    replace: bool = True,
) -> Path:
    """images in [0, 1], (N, C, H, W) -> one upscaled, captioned PNG grid."""
    return save_image_file(render([Panel(images, title, nrow)], caption), path, replace)


def save_panels(panels: Sequence[Panel], path: Path, caption: str = "", replace: bool = True) -> Path:
    return save_image_file(render(panels, caption), path, replace)


def reconstruction_panel(inputs: Tensor, outputs: Tensor, title: str = "", per_row: int = 8) -> Panel:
    """Inputs above their reconstructions, rows labelled "input" and "output"; a short last
    chunk is padded with white cells so rows stay aligned."""
    import torch

    rows, labels = [], []
    for start in range(0, len(inputs), per_row):
        for name, source in (("input", inputs), ("output", outputs)):
            chunk = source[start : start + per_row].detach().cpu().float()
            if len(chunk) < per_row:
                chunk = torch.cat([chunk, torch.ones(per_row - len(chunk), *chunk.shape[1:])])
            rows.append(chunk)
            labels.append(name)
    return Panel(torch.cat(rows), title, per_row, tuple(labels))


def run_caption(run: str | Path, likelihood: str, step: int | None, what: str = "") -> str:
    """The line every figure carries: what it shows, which run, which likelihood, which step.
    A run under the working directory is named relative to it (short enough to read)."""
    run = Path(run)
    with contextlib.suppress(ValueError):
        run = run.resolve().relative_to(Path.cwd().resolve())
    where = f"run {run} · likelihood {likelihood}" + (f" · step {step}" if step is not None else "")
    return f"{what}\n{where}" if what else where


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


def check_new_image_path(path: Path) -> Path:
    """check_image_path, and nothing there yet: an explicit --out never replaces a file."""
    path = check_image_path(path)
    if path.exists():
        raise VaeError(
            f"--out {path} already exists (nothing is ever overwritten): pass a new file name, "
            f"or leave out --out for a fresh name in the run directory"
        )
    return path


def read_metrics(metrics_csv: Path) -> list[dict[str, str]]:
    with metrics_csv.open() as f:
        return list(csv.DictReader(f))


TERMS = (("elbo", "ELBO"), ("recon", "E_q log p(x|z)"), ("kl", "KL(q(z|x) || p(z))"))
Series = dict[str, dict[str, list[tuple[int, float]]]]


def elbo_series(rows: list[dict[str, str]]) -> Series:
    """{term: {"train": [(step, value)], "validation": [...]}} from Lightning's CSV log.

    Training values are the windowed means logged every log_every_n_steps steps (the per-epoch
    means where a run logged no window); validation values are the full-split means.
    Lightning writes a row's `step` before it counts the optimiser step just taken (a
    validation after 5 steps is logged at step 4), so steps here are that plus one: the
    number of optimiser steps done, the step a checkpoint and the figure captions name.
    """
    series: Series = {}
    for term, _ in TERMS:
        curves: dict[str, list[tuple[int, float]]] = {}
        for label, keys in (("train", (f"train/{term}_step", f"train/{term}_epoch")),
                            ("validation", (f"val/{term}",))):  # fmt: skip
            for key in keys:
                points = [(int(r["step"]) + 1, float(r[key])) for r in rows if r.get(key)]
                if points:
                    curves[label] = points
                    break
        if curves:
            series[term] = curves
    return series


def plot_elbo_curves(metrics_csv: Path, out: Path, caption: str = "") -> Path | None:
    """ELBO, reconstruction term and KL (nats per example) against optimiser steps: training
    as lines, validation as markers. A series with a single point is drawn as a marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    series = elbo_series(read_metrics(metrics_csv))
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.4), dpi=100, squeeze=False)
    for ax, (term, curves) in zip(axes[0], series.items(), strict=True):
        for label, points in curves.items():
            steps, values = zip(*points, strict=True)
            line = label == "train" and len(points) > 1
            ax.plot(steps, values, "-" if line else "o", label=label, lw=1.2, ms=5)
        ax.set_title(dict(TERMS)[term], fontsize=10)
        ax.set_xlabel("optimiser step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # whole steps, even one
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("nats per example")
    axes[0][0].legend(fontsize=8)
    if caption:
        fig.suptitle(caption, fontsize=9)
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
