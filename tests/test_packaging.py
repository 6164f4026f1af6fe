"""The wheel carries experiments.yaml: `vae experiments` works from an empty folder after a
non-editable install."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_the_experiments_and_lists_them_from_an_empty_folder(tmp_path: Path):
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("vae_cli-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert "vae_cli/experiments.yaml" in z.namelist()
        site = tmp_path / "site"
        z.extractall(site)  # what `pip install wheel` puts in site-packages
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "VAE_EXPERIMENTS"}
    env.update(PYTHONPATH=str(site), COLUMNS="200")
    where = subprocess.run([sys.executable, "-c", "import vae_cli; print(vae_cli.__file__)"], cwd=empty,
                           env=env, capture_output=True, text=True)  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(site)  # the installed copy, not this checkout
    listed = subprocess.run([sys.executable, "-m", "vae_cli", "experiments"], cwd=empty, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "quickstart" in listed.stdout and "mnist-bernoulli" in listed.stdout
    assert "iwae-2l-iwae-k50" in listed.stdout
