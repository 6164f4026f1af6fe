"""Arrays of images: .npy / .npz files of shape (N, H, W), (N, H, W, C) or (N, C, H, W).

Values are 8-bit (uint8, or any integer type holding 0..255) or floats in [0, 1]. Floats are
kept as continuous data (see docs/data.md): float32, no dequantisation, no 8-bit offset.
The channel axis is read from the shape: C in {1, 3} at axis 1 or at the last axis; a shape
where both could be it, or neither, is refused rather than guessed.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vae_cli.errors import VaeError

SUFFIXES = (".npy", ".npz")
LABEL_KEYS = ("labels", "y")  # an .npz key holding one integer label per image (optional)


def read(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The image array of a .npy, or of a .npz (key `x`, `images`, or its only array), and
    the labels of a .npz if it has them."""
    if not path.is_file():
        raise VaeError(f"{path} does not exist: pass an existing .npy/.npz file or a folder of images")
    try:
        # allow_pickle=False: an object array (pickled Python objects) could run code when read.
        # An .npz is read lazily, so its arrays are read inside this `try` too.
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return data, None
        with data:
            names = list(data.files)
            images = [k for k in ("x", "images") if k in names]
            others = [k for k in names if k not in LABEL_KEYS]
            key = images[0] if images else (others[0] if len(others) == 1 else None)
            if key is None:
                raise VaeError(
                    f"{path} holds arrays {names}: name the images `x` or `images` (labels: `labels` or `y`)"
                )
            labels = next((data[k] for k in LABEL_KEYS if k in names), None)
            return data[key], labels
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise VaeError(
                f"{path} holds Python objects (an object array), which are never unpickled, since "
                f"that could run code: save the images as a uint8 or float array"
            ) from None
        raise VaeError(f"cannot read {path} as a numpy array (ValueError): is it a .npy/.npz?") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise VaeError(
            f"cannot read {path} as a numpy array ({type(e).__name__}): is it a .npy/.npz?"
        ) from None


def to_nchw(a: np.ndarray, path: Path) -> np.ndarray:
    """(N, H, W) | (N, H, W, C) | (N, C, H, W) with C in {1, 3} -> (N, C, H, W)."""
    if a.ndim in (3, 4) and 0 in a.shape[1:]:
        raise VaeError(f"{path} has shape {a.shape}: its images are empty (a zero-length axis)")
    if a.ndim == 3:
        return a[:, None]
    if a.ndim != 4:
        raise VaeError(
            f"{path} has shape {a.shape}: expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3"
        )
    first, last = a.shape[1] in (1, 3), a.shape[3] in (1, 3)
    if first and last:
        raise VaeError(
            f"{path} has shape {a.shape}: channels could be axis 1 or axis 3; transpose it to "
            f"(N, H, W, C) or (N, C, H, W) with H, W not 1 or 3"
        )
    if last:
        return a.transpose(0, 3, 1, 2)
    if first:
        return a
    raise VaeError(f"{path} has shape {a.shape}: no channel axis of size 1 or 3 at axis 1 or 3")


def to_tensor(a: np.ndarray, path: Path) -> Tensor:
    """uint8 for 8-bit data, float32 for floats in [0, 1]; anything else is refused."""
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 255:
            raise VaeError(f"{path} holds integers in [{lo}, {hi}]: 8-bit data must lie in 0..255")
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8))
    if not np.issubdtype(a.dtype, np.floating):
        raise VaeError(f"{path} has dtype {a.dtype}: pass uint8 0..255 or floats in [0, 1]")
    bad = ~np.isfinite(a)
    if bad.any():
        raise VaeError(f"{path} holds {int(bad.sum())} NaN/inf values: remove or fix those images")
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if lo < 0 or hi > 1:
        hint = " (8-bit values stored as floats? cast to uint8)" if hi <= 255 and lo >= 0 else ""
        raise VaeError(f"{path} holds floats in [{lo:g}, {hi:g}]: float data must lie in [0, 1]{hint}")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def load(path: Path) -> tuple[Tensor, Tensor | None]:
    """Images (N, C, H, W) as uint8 or float32, and integer labels (N,) if the file has them."""
    a, labels = read(path)
    x = to_tensor(to_nchw(a, path), path)
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(x) or not np.issubdtype(labels.dtype, np.integer):
            raise VaeError(f"{path}: labels must be {len(x)} integers, one per image, got {labels.shape}")
        return x, torch.from_numpy(labels.astype(np.int64))
    return x, None
