"""Deterministic train/val/test assignment of user data by hashing a stable key.

An image's split depends only on (seed, its key): the relative path in a folder, the row
index in an array. Adding files to a folder therefore never moves an existing image to
another split (an index would: every row after an insertion shifts). The rule:

    u = int(sha256(f"{seed}:{key}")[:16 hex digits]) / 16**16      # uniform on [0, 1)
    test if u < test_fraction, else val if u < test_fraction + val_fraction, else train

Fractions are expected, not exact: 1000 images at 0.1 give about 100 (binomial, +-9.5).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

from vae_cli.errors import VaeError

SPLITS = ("train", "val", "test")


def unit_hash(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()
    return int(digest[:16], 16) / 16**16


def assign(keys: Sequence[str], val: float, test: float, seed: int) -> dict[str, Tensor]:
    """Indices of each split (ascending) for the given fractions; 0 means the split is not
    held out here (given by --val-data/--test-data instead)."""
    u = torch.tensor([unit_hash(k, seed) for k in keys], dtype=torch.float64)
    where = {
        "test": u < test,
        "val": (u >= test) & (u < test + val),
        "train": u >= test + val,
    }
    return {name: mask.nonzero().squeeze(1) for name, mask in where.items()}


def check_sizes(counts: dict[str, int], what: str, rule: str) -> None:
    """Every split the run uses must hold at least one example."""
    empty = [name for name in SPLITS if counts.get(name, 0) == 0]
    if empty:
        have = ", ".join(f"{n} {counts.get(n, 0)}" for n in SPLITS)
        raise VaeError(
            f"{what} gives an empty {' and '.join(empty)} split ({have}; {rule}): add data, "
            f"change --val-fraction/--test-fraction, or pass --val-data/--test-data"
        )
