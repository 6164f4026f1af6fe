"""report: grids are upscaled by whole pixels, captioned, titled and row-labelled; the ELBO
plot reads steps, the three terms and validation points from Lightning's CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vae_cli import report


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.int16)


def test_default_grid_is_upscaled_by_whole_pixels_to_400px(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (64, 1, 8, 8)).float() / 255
    out = _png(report.save_grid(images, tmp_path / "g.png"))
    assert out.shape[1] >= 400
    scale = (out.shape[1] - 9 * report.PAD) // (8 * 8)
    assert scale >= 5 and 8 * (8 * scale) + 9 * report.PAD == out.shape[1]
    # cell (row 2, column 5), pixel (3, 6): a scale x scale block of the original value
    r, c, i, j = 2, 5, 3, 6
    top = report.PAD + r * (8 * scale + report.PAD) + i * scale
    left = report.PAD + c * (8 * scale + report.PAD) + j * scale
    block = out[top : top + scale, left : left + scale]
    assert (block == round(float(images[r * 8 + c, 0, i, j]) * 255)).all()


def test_caption_adds_a_text_strip_above_the_grid(tmp_path: Path) -> None:
    images = torch.full((16, 1, 28, 28), 0.5)
    bare = _png(report.save_grid(images, tmp_path / "bare.png"))
    caption = report.run_caption("runs/x/version_3", "bernoulli", 1200, "samples")
    captioned = _png(report.save_grid(images, tmp_path / "cap.png", caption=caption))
    assert captioned.shape[1] == bare.shape[1] and captioned.shape[0] > bare.shape[0] + 2 * report.FONT_SIZE
    strip = captioned[: captioned.shape[0] - bare.shape[0]]
    assert strip.min() < 100 and strip.max() == 255  # dark glyphs on white
    assert (captioned[-bare.shape[0] :] == bare).all()  # the grid itself is unchanged below it
    assert "step 1200" in caption and "bernoulli" in caption and "runs/x/version_3" in caption


def test_panels_carry_titles_side_by_side(tmp_path: Path) -> None:
    grey = torch.full((16, 1, 8, 8), 0.5)
    panels = [report.Panel(grey, "E[x|z]", 4), report.Panel(grey, "x ~ p(x|z)", 4)]
    out = _png(report.save_panels(panels, tmp_path / "p.png"))
    untitled = _png(report.save_panels([report.Panel(grey, "", 4)] * 2, tmp_path / "u.png"))
    assert out.shape[1] == untitled.shape[1] >= 400
    extra = out.shape[0] - untitled.shape[0]
    assert extra > report.FONT_SIZE
    half = out.shape[1] // 2
    for part in (out[:extra, :half], out[:extra, half:]):  # a title over each panel
        assert part.min() < 100


def test_reconstruction_rows_are_labelled_input_and_output(tmp_path: Path) -> None:
    inputs, outputs = torch.zeros(10, 1, 8, 8), torch.ones(10, 1, 8, 8) * 0.5
    panel = report.reconstruction_panel(inputs, outputs, per_row=8)
    assert list(panel.row_labels) == ["input", "output", "input", "output"]
    assert len(panel.images) == 32
    assert (panel.images[:8] == 0).all() and (panel.images[8:16] == 0.5).all()
    assert (panel.images[16:18] == 0).all() and (panel.images[24:26] == 0.5).all()
    assert (panel.images[18:24] == 1).all() and (panel.images[26:] == 1).all()  # white padding cells
    labelled = _png(report.save_panels([panel], tmp_path / "r.png"))
    plain = _png(report.save_panels([report.Panel(panel.images, "", 8)], tmp_path / "plain.png"))
    margin = labelled.shape[1] - plain.shape[1]
    assert margin > report.font_width("output")
    assert labelled.shape[0] == plain.shape[0]
    cell = (plain.shape[0] - report.PAD) // 4
    for row in range(4):  # text in the left margin at every row's height
        assert labelled[row * cell : (row + 1) * cell, :margin].min() < 100


CSV_HEAD = "epoch,step,train/elbo_step,train/recon_step,train/kl_step,val/elbo,val/recon,val/kl\n"


def test_elbo_series_reads_steps_terms_and_validation(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text(CSV_HEAD + "0,10,-50,-45,5,,,\n0,20,-40,-34,6,,,\n0,29,,,,-38,-31,7\n")
    series = report.elbo_series(report.read_metrics(csv))
    # Lightning logs step s after s + 1 optimiser steps (checked on a real run below)
    assert series["elbo"]["train"] == [(11, -50.0), (21, -40.0)]
    assert series["recon"]["validation"] == [(30, -31.0)]
    assert series["kl"]["train"] == [(11, 5.0), (21, 6.0)]


@pytest.mark.slow
def test_elbo_series_steps_are_the_checkpoint_steps(tiny_run: Path) -> None:
    from vae_cli.training.checkpointing import checkpoint_step

    series = report.elbo_series(report.read_metrics(tiny_run / "metrics.csv"))
    # the last validation ran at the end of training: the step last.ckpt was saved at
    assert series["elbo"]["validation"][-1][0] == checkpoint_step(tiny_run / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("rows", ["0,5,,,,-38,-31,7\n", "0,3,-50,-45,5,,,\n0,5,,,,-38,-31,7\n"])
def test_elbo_plot_with_one_point_draws_markers(tmp_path: Path, rows: str) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text(CSV_HEAD + rows)
    out = report.plot_elbo_curves(csv, tmp_path / "elbo.png", "run r · likelihood bernoulli · step 5")
    assert out is not None
    image = _png(out)
    assert image.shape[1] >= 3 * 300  # one panel per term: ELBO, recon, KL
    # a marker is a filled disc (many dark-coloured pixels), not an empty axis
    rgb = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)
    coloured = (np.abs(rgb[..., 0] - rgb[..., 2]) > 60).sum()
    assert coloured > 3 * 15


def test_one_point_plot_has_whole_step_ticks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.figure

    csv = tmp_path / "metrics.csv"
    csv.write_text(CSV_HEAD + "0,4,,,,-38,-31,7\n")
    ticks: list[list[float]] = []
    save = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        ticks.extend(list(ax.get_xticks()) for ax in fig.axes)
        ax = fig.axes[0]
        ticks.append([line.get_xdata()[0] for line in ax.get_lines()])
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    assert report.plot_elbo_curves(csv, tmp_path / "elbo.png", "step 5") is not None
    assert ticks[-1] == [5]  # the point sits at step 5, the step of the checkpoint
    for axis_ticks in ticks[:-1]:
        assert axis_ticks and all(float(t).is_integer() for t in axis_ticks)


def test_every_cell_is_at_least_min_cell_pixels(tmp_path: Path) -> None:
    # 2 panels x 6 rows x 12 columns of 8x8 digits (vae latent's interpolations) was 16 px a cell
    panels = [report.Panel(torch.rand(72, 1, 8, 8), "t", 12)] * 2
    image = report.render(panels, "caption")
    assert report.MIN_CELL >= 32
    assert image.width >= 2 * 12 * report.MIN_CELL


def test_long_captions_wrap_instead_of_running_off(tmp_path: Path) -> None:
    path = "/very/long/absolute/path/" + "/".join(f"folder{i}" for i in range(20)) + "/version_0"
    lines = report._wrap(f"run {path} · likelihood bernoulli", 300)
    assert all(report.font_width(line) <= 300 - 2 * report.MARGIN for line in lines)
    assert "".join(lines).replace(" ", "") == f"run{path}·likelihoodbernoulli"  # nothing dropped


def test_caption_names_a_run_under_the_working_directory_relatively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    caption = report.run_caption(tmp_path / "runs" / "x" / "version_0", "bernoulli", 3)
    assert caption.startswith("run runs/x/version_0 ·")


def test_out_never_replaces_a_file(tmp_path: Path) -> None:
    target = tmp_path / "samples.png"
    target.write_bytes(b"earlier work")
    with pytest.raises(report.VaeError, match="already exists"):
        report.save_grid(torch.rand(4, 1, 8, 8), target, replace=False)
    assert target.read_bytes() == b"earlier work"
    fresh = report.save_grid(torch.rand(4, 1, 8, 8), tmp_path / "new.png", replace=False)
    assert Image.open(fresh).width >= 400 and sorted(p.name for p in tmp_path.iterdir()) == [
        "new.png",
        "samples.png",
    ]


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_cells_are_framed_in_a_grey_that_no_binary_pixel_has(value: float, tmp_path: Path) -> None:
    """A grid of all-white (or all-black) images still shows where each cell ends."""
    out = _png(report.save_grid(torch.full((4, 1, 8, 8), value), tmp_path / "g.png"))
    scale = (out.shape[1] - 3 * report.PAD) // 16
    seam = out[:, report.PAD + 8 * scale : 2 * report.PAD + 8 * scale]  # between the two columns
    cell = out[report.PAD : report.PAD + 8 * scale, report.PAD : report.PAD + 8 * scale]
    assert (cell == round(value * 255)).all()
    assert (seam == round(report.PAD_VALUE * 255)).all()


def test_a_short_last_row_is_left_blank_not_grey(tmp_path: Path) -> None:
    """7 images in rows of 3: the two missing cells are white, unlike any drawn image here."""
    out = _png(report.save_grid(torch.zeros(7, 1, 8, 8), tmp_path / "g.png", nrow=3))
    scale = (out.shape[1] - 4 * report.PAD) // 24
    top = report.PAD + 2 * (8 * scale + report.PAD)  # third row
    drawn = out[top : top + 8 * scale, report.PAD : report.PAD + 8 * scale]
    blank = out[top : top + 8 * scale, 3 * report.PAD + 16 * scale : 3 * report.PAD + 24 * scale]
    assert (drawn == 0).all() and (blank == 255).all()
