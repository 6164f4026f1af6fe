"""data/arrays.py: .npy/.npz arrays. Every layout and dtype read unchanged into its split,
labels kept, bad arrays (NaN, out of range, ambiguous shape) one line, object arrays refused
without unpickling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import expected_split, setup

from vae_cli.data import splits
from vae_cli.errors import VaeError

LAYOUTS = {"NHW": (40, 6, 5), "NHWC1": (40, 6, 5, 1), "NHWC3": (40, 6, 5, 3), "NCHW1": (40, 1, 6, 5),
           "NCHW3": (40, 3, 6, 5)}  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("ext", ["npy", "npz"])
def test_arrays_of_each_layout_and_dtype(tmp_path: Path, layout: str, kind: str, ext: str):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, LAYOUTS[layout]).astype(np.uint8)
    if kind != "uint8":
        a = (a / 255).astype(kind)
    path = tmp_path / f"x.{ext}"
    np.save(path, a) if ext == "npy" else np.savez(path, images=a)
    dm = setup(dataset=path, val_fraction=0.25, test_fraction=0.25)
    nchw = a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2) if layout.startswith("NHWC") else a
    assert dm.shape == nchw.shape[1:]
    assert dm.continuous == (kind != "uint8")
    # every row lands in the split its index hashes to, unchanged (float rows exactly: no noise)
    for split in splits.SPLITS:
        rows = [i for i in range(len(a)) if expected_split(str(i), 0, 0.25, 0.25) == split]
        raw = torch.from_numpy(nchw[rows])
        assert torch.equal(dm.source.splits[split], raw if kind == "uint8" else raw.float())
        if kind != "uint8" and split != "train":
            assert torch.equal(dm.splits[split], raw.float())  # continuous: scored as given


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[[0.5, np.nan]]] * 10, dtype=np.float32), "NaN/inf"),
        (np.array([[[0.5, np.inf]]] * 10, dtype=np.float32), "NaN/inf"),
        (np.full((10, 4, 4), 1.5, dtype=np.float32), r"floats in \[1.5, 1.5\]"),
        (np.full((10, 4, 4), 300, dtype=np.int32), r"integers in \[300, 300\]"),
        (np.zeros((10, 4), np.uint8), r"expected \(N, H, W\)"),
        (np.zeros((10, 3, 4, 3), np.uint8), "could be axis 1 or axis 3"),
        (np.zeros((10, 5, 4, 2), np.uint8), "no channel axis"),
        (np.zeros((10, 0, 0), np.uint8), "images are empty"),
        (np.zeros((10, 1, 0, 4), np.uint8), "images are empty"),
    ],
)
def test_bad_arrays_get_one_line(tmp_path: Path, array: np.ndarray, message: str):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(VaeError, match=message) as e:
        setup(dataset=tmp_path / "bad.npy")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("ext", [".npy", ".npz"])
def test_object_arrays_are_refused_without_unpickling(tmp_path: Path, ext: str):
    """An object array is pickled Python objects: reading it could run code (a payload that
    would create a marker file), so it is refused with one line and never unpickled."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (pathlib_touch, (str(marker),))

    a = np.empty((10, 4, 4), dtype=object)
    a[:] = 0
    a[0, 0, 0] = Payload()
    path = tmp_path / f"evil{ext}"
    if ext == ".npy":
        np.save(path, a, allow_pickle=True)
    else:
        np.savez(path, x=a)
    with pytest.raises(VaeError, match="Python objects") as e:
        setup(dataset=path)
    assert "\n" not in str(e.value) and not marker.exists()


def pathlib_touch(path: str) -> None:
    Path(path).touch()


def test_npz_labels_are_kept_for_plots(tmp_path: Path):
    x = np.zeros((50, 4, 4), np.uint8)
    y = np.arange(50) % 5
    np.savez(tmp_path / "l.npz", x=x, labels=y)
    dm = setup(dataset=tmp_path / "l.npz")
    rows = [i for i in range(50) if expected_split(str(i)) == "test"]
    assert dm.labels["test"].tolist() == (y[rows]).tolist()
