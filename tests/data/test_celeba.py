"""data/celeba.py: CelebA from torchvision's layout (faked under tmp_path), its official
partition and the 148-pixel centre crop at 64x64; missing files named in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datafiles import setup
from PIL import Image

from vae_cli.errors import VaeError


def fake_celeba(root: Path, parts: tuple[int, ...] = (0,) * 6 + (1,) * 3 + (2,) * 3) -> Path:
    """torchvision's CelebA layout with len(parts) 178x218 images: the central 148x148 crop
    is one colour and the rest black, so the crop is visible in the output. Stored as PNG
    bytes under the .jpg names (PIL reads the content), so no JPEG ringing blurs the edge."""
    base = root / "celeba"
    names = [f"{i + 1:06d}.jpg" for i in range(len(parts))]
    for i, name in enumerate(names):
        a = np.zeros((218, 178, 3), np.uint8)
        a[35:183, 15:163] = (200, 100, 50 + 10 * i)  # rows 35..182, cols 15..162: the centre 148
        (base / "img_align_celeba").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(base / "img_align_celeba" / name, format="PNG")
    n = len(names)
    lines = {
        "list_eval_partition.txt": [f"{f} {p}" for f, p in zip(names, parts, strict=True)],
        "identity_CelebA.txt": [f"{f} 1" for f in names],
        "list_bbox_celeba.txt": [str(n), "image_id x_1 y_1 width height"] + [f"{f} 0 0 1 1" for f in names],
        "list_landmarks_align_celeba.txt": [str(n), "lefteye_x lefteye_y"] + [f"{f} 1 1" for f in names],
        "list_attr_celeba.txt": [str(n), "Smiling"] + [f"{f} 1" for f in names],
    }
    for name, rows in lines.items():
        (base / name).write_text("\n".join(rows) + "\n")
    return root


def test_celeba_loads_from_torchvision_layout_with_the_64px_crop(tmp_path: Path):
    root = fake_celeba(tmp_path)
    dm = setup(dataset="celeba", data_dir=root, val_size=3)
    assert dm.shape == (3, 64, 64)
    assert {k: len(v) for k, v in dm.source.splits.items()} == {"train": 6, "val": 3, "test": 3}
    x = dm.source.splits["test"].float()
    # the 148 centre crop keeps exactly the inner colour; a wider one would let black in
    assert (x[:, 0] == 200).all() and (x[:, 1] == 100).all()
    assert x[:, 2, 0, 0].tolist() == [50 + 10 * i for i in (9, 10, 11)]  # the test partition, in order


def test_celeba_missing_files_one_line(tmp_path: Path):
    root = fake_celeba(tmp_path)
    (root / "celeba" / "list_attr_celeba.txt").unlink()
    with pytest.raises(VaeError, match=r"CelebA not found .*missing list_attr_celeba\.txt") as e:
        setup(dataset="celeba", data_dir=root, val_size=3)
    assert "\n" not in str(e.value)
    with pytest.raises(VaeError, match="CelebA not found"):
        setup(dataset="celeba", data_dir=tmp_path / "nothing", val_size=3)
