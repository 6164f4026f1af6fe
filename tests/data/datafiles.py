"""Helpers of the data tests: image folders and arrays written under tmp_path (PIL, numpy), a
data module set up on them, and the documented split rule written out independently."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from vae_cli.config import Config
from vae_cli.data.datamodule import VAEDataModule


def save(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def folder(root: Path, n: int = 20, size: int = 8, classes: tuple[str, ...] = ("dark", "light")) -> Path:
    """n RGB images per class; class k's pixels are all 40 + 150k (k-th subfolder), half PNG
    and half JPEG (flat colours survive JPEG to within a few levels)."""
    for k, name in enumerate(classes):
        for i in range(n):
            a = np.full((size, size, 3), 40 + 150 * k, dtype=np.uint8)
            save(root / name / f"img{i:03d}.{'png' if i % 2 else 'jpg'}", a)
    return root


def cfg(dataset: Path | str, **kw) -> Config:
    base = dict(dataset=str(dataset), likelihood="gaussian", batch_size=4, num_workers=0)
    return Config(**{**base, **kw}).validate()


def setup(**kw) -> VAEDataModule:
    dm = VAEDataModule(cfg(**kw))
    dm.setup()
    return dm


def expected_split(key: str, seed: int = 0, val: float = 0.1, test: float = 0.1) -> str:
    """The documented rule, written out independently of data/splits.py."""
    u = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:16], 16) / 16**16
    return "test" if u < test else "val" if u < test + val else "train"
