"""data/images.py: image folders. Shape and labels inferred from the files and subfolders,
resized and centre-cropped, 16-bit and EXIF-rotated images read as a viewer shows them,
hidden files ignored; unreadable, truncated or missing images named in one line.

Every test makes its own files under tmp_path (PIL, numpy): offline, a few seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import cfg, expected_split, folder, save, setup
from PIL import Image

from vae_cli.data import splits
from vae_cli.data.datamodule import VAEDataModule
from vae_cli.errors import VaeError


def test_folder_infers_shape_and_labels_follow_subfolders(tmp_path: Path):
    root = folder(tmp_path / "imgs")
    said: list[str] = []
    dm = VAEDataModule(cfg(root), say=said.append)
    dm.setup()
    assert dm.shape == (3, 8, 8)
    assert any("channels: 3" in s for s in said) and any("8x8" in s for s in said)
    assert dm.source.classes == ("dark", "light")
    for split in ("train", "val", "test"):
        raw = dm.source.splits[split]  # uint8, before the support transform
        brightness = raw.float().mean(dim=(1, 2, 3))
        # the label is the subfolder, so it predicts the pixel value exactly
        assert torch.equal(dm.labels[split], (brightness > 115).long())
    counts = {k: len(v) for k, v in dm.source.splits.items()}
    want = {s: 0 for s in splits.SPLITS}
    for f in sorted(root.rglob("*.*")):
        want[expected_split(f.relative_to(root).as_posix())] += 1
    assert counts == want


def test_grey_folder_and_resize_then_centre_crop(tmp_path: Path):
    # 8 high x 16 wide: the shorter side is already 8, so the crop keeps columns 4..11
    a = np.tile(np.arange(16, dtype=np.uint8) * 10, (8, 1))
    for i in range(30):
        save(tmp_path / "g" / f"{i}.png", a)
    dm = setup(dataset=tmp_path / "g", image_size=8, val_fraction=0.2, test_fraction=0.2)
    assert dm.shape == (1, 8, 8)
    x = dm.source.splits["train"][0, 0].numpy()
    assert np.array_equal(x, a[:, 4:12])
    assert dm.labels["train"] is None  # no subfolders, no labels


def test_mixed_sizes_need_image_size(tmp_path: Path):
    folder(tmp_path / "m", n=10, size=8)
    save(tmp_path / "m" / "dark" / "big.png", np.zeros((12, 12, 3), np.uint8))
    with pytest.raises(VaeError, match=r"different sizes.*--image-size"):
        setup(dataset=tmp_path / "m")
    assert setup(dataset=tmp_path / "m", image_size=8).shape == (3, 8, 8)


def test_bad_files_are_named_or_skipped_and_counted(tmp_path: Path):
    root = folder(tmp_path / "b", n=15)
    (root / "dark" / "junk.png").write_bytes(b"not an image")
    with pytest.raises(VaeError, match=r"junk\.png.*--skip-bad-images"):
        setup(dataset=root)
    said: list[str] = []
    dm = VAEDataModule(cfg(root, skip_bad_images=True), say=said.append)
    dm.setup()
    assert sum(len(v) for v in dm.source.splits.values()) == 30
    assert any("skipped 1" in s for s in said)


def test_truncated_image_fails_at_decoding_with_its_name(tmp_path: Path):
    root = folder(tmp_path / "t", n=15)
    good = (root / "light" / "img001.png").read_bytes()
    (root / "light" / "cut.png").write_bytes(good[: len(good) // 2])  # header fine, data cut
    with pytest.raises(VaeError, match=r"cut\.png"):
        setup(dataset=root, image_size=8, channels=3)  # headers not probed: found by decoding
    said: list[str] = []
    dm = VAEDataModule(cfg(root, image_size=8, channels=3, skip_bad_images=True), say=said.append)
    dm.setup()
    assert sum(len(v) for v in dm.source.splits.values()) == 30
    assert any("skipped 1" in s for s in said)


@pytest.mark.parametrize("make", ["empty", "no-images"])
def test_folder_without_images(tmp_path: Path, make: str):
    root = tmp_path / "e"
    root.mkdir()
    if make == "no-images":
        (root / "notes.txt").write_text("hello")
    with pytest.raises(VaeError, match="holds no images"):
        setup(dataset=root)


def test_16bit_exif_rotated_and_hidden_files_are_read_as_a_viewer_shows_them(tmp_path: Path):
    """16-bit greys are scaled to 8 bits (PIL's convert clips them to white), a JPEG's EXIF
    rotation is applied (H and W swap for a quarter turn), and hidden files and folders
    (.ipynb_checkpoints, .git) are neither data nor classes."""
    root = tmp_path / "imgs"
    (root / "grey").mkdir(parents=True)
    for i in range(12):
        Image.fromarray(np.full((8, 6), 32768, np.uint16)).save(root / "grey" / f"{i}.png")
    (root / "photo").mkdir()
    for i in range(12):
        im = Image.fromarray(np.full((6, 8, 3), 200, np.uint8))  # stored 6 high, 8 wide
        exif = im.getexif()
        exif[0x0112] = 6  # rotate 90 degrees to display: 8 high, 6 wide
        im.save(root / "photo" / f"{i}.jpg", exif=exif.tobytes())
    for hidden in (".ipynb_checkpoints/a.png", "grey/.b.png", ".git/c.png"):
        save(root / hidden, np.zeros((8, 6, 3), np.uint8))
    dm = setup(dataset=root, channels=1, val_fraction=0.2, test_fraction=0.2)
    source = dm.source
    assert source.shape == (1, 8, 6)  # the photos' displayed size equals the greys'
    assert source.classes == ("grey", "photo")
    x = torch.cat([part for part in source.splits.values() if part is not None])
    assert len(x) == 24
    greys = x[x.float().mean(dim=(1, 2, 3)) < 150]
    assert len(greys) > 0 and greys.float().mean().item() == pytest.approx(128, abs=1)
