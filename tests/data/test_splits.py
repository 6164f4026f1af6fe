"""data/splits.py: hash splits. An example's split depends on its key alone (new files move no
old one), with the documented rule; too few examples for a split is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datafiles import expected_split, save, setup

from vae_cli.data import splits
from vae_cli.errors import VaeError


def test_split_of_an_image_survives_new_files(tmp_path: Path):
    keys = [f"a/{i}.png" for i in range(300)]
    before = splits.assign(keys, 0.2, 0.1, seed=3)
    after = splits.assign(keys[:150] + [f"b/{i}.png" for i in range(200)] + keys[150:], 0.2, 0.1, seed=3)
    place = lambda idx, ks: {ks[i]: name for name, ix in idx.items() for i in ix.tolist()}  # noqa: E731
    old = place(before, keys)
    new = place(after, keys[:150] + [f"b/{i}.png" for i in range(200)] + keys[150:])
    assert all(new[k] == old[k] for k in keys)
    # fractions: 300 keys at 0.1 -> 30 +- 5.2 (binomial sd); 4 sd bounds
    assert abs(len(before["test"]) - 30) < 21 and abs(len(before["val"]) - 60) < 28
    assert all(old[k] == expected_split(k, 3, 0.2, 0.1) for k in keys)


def test_too_few_images_for_the_splits(tmp_path: Path):
    for i in range(3):
        save(tmp_path / "few" / f"{i}.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(VaeError, match=r"empty .*split"):
        setup(dataset=tmp_path / "few")
