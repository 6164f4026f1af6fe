"""data/sources.py: what every user-data source shares. Separate val and test files, float data
(no 8-bit offset, no discrete likelihood), streaming chosen by the memory budget with the
in-memory transforms, split settings pinned to absolute paths; end to end on a folder.

Every test makes its own files under tmp_path (PIL, numpy): offline, a few seconds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import cfg, expected_split, folder, save, setup

from vae_cli.data import sources
from vae_cli.errors import VaeError


def test_separate_val_and_test_folders(tmp_path: Path):
    train = folder(tmp_path / "train", n=10)
    val = folder(tmp_path / "val", n=3)
    test = folder(tmp_path / "test", n=4)
    dm = setup(dataset=train, val_data=val, test_data=test)
    assert {k: len(v) for k, v in dm.source.splits.items()} == {"train": 20, "val": 6, "test": 8}


def test_float_bits_per_dim_has_no_8bit_offset(tmp_path: Path):
    np.save(tmp_path / "f.npy", np.random.default_rng(1).random((30, 4, 4), dtype=np.float32))
    np.save(tmp_path / "u.npy", np.random.default_rng(1).integers(0, 256, (30, 4, 4)).astype(np.uint8))
    assert setup(dataset=tmp_path / "f.npy").bits_offset == 0.0
    assert setup(dataset=tmp_path / "u.npy").bits_offset == 8.0


@pytest.mark.parametrize("likelihood", ["categorical", "logistic-mixture"])
def test_discrete_likelihood_on_floats_is_refused(tmp_path: Path, likelihood: str):
    np.save(tmp_path / "f.npy", np.random.default_rng(1).random((30, 4, 4), dtype=np.float32))
    with pytest.raises(VaeError, match="no 8-bit grid"):
        setup(dataset=tmp_path / "f.npy", likelihood=likelihood)


# ---------------------------------------------------------------------------- streaming


def test_streamed_batches_get_the_same_transform_semantics(tmp_path: Path):
    for i in range(40):
        save(tmp_path / "s" / f"{i:02d}.png", np.full((6, 6), 128, np.uint8))
    dm = setup(dataset=tmp_path / "s", likelihood="bernoulli", stream="yes")
    raw = dm.splits["test"][0].unsqueeze(0).repeat(50, 1, 1, 1)
    ev1 = dm.on_after_batch_transfer((raw, torch.tensor(3)), 0)
    ev2 = dm.on_after_batch_transfer((raw, torch.tensor(3)), 0)
    assert torch.equal(ev1, ev2)  # eval: fixed draws for a batch
    assert set(ev1.unique().tolist()) == {0.0, 1.0}
    assert abs(ev1.mean().item() - 128 / 255) < 4 * (0.25 / ev1.numel()) ** 0.5  # Bernoulli(128/255)
    tr1, tr2 = dm._on_support(raw), dm._on_support(raw)  # training: fresh draws per batch
    assert set(tr1.unique().tolist()) == {0.0, 1.0} and not torch.equal(tr1, tr2)


def test_auto_streams_only_above_the_memory_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = folder(tmp_path / "a", n=15)
    assert not setup(dataset=root).source.streamed
    monkeypatch.setattr(sources, "HOST_MEMORY_FRACTION", 1e-12)  # 30 images of 192 B > budget
    assert setup(dataset=root).source.streamed


def test_static_binarisation_cannot_stream(tmp_path: Path):
    root = folder(tmp_path / "a", n=15)
    with pytest.raises(VaeError, match="static"):
        setup(dataset=root, likelihood="bernoulli", binarize="static", stream="yes")


def test_split_settings_are_recorded_with_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder(tmp_path / "imgs", n=10)
    monkeypatch.chdir(tmp_path)
    pinned = sources.pinned(dataclasses.replace(cfg("imgs"), val_fraction=0.2, split_seed=7))
    saved = pinned.to_dict()
    assert saved["dataset"] == str(tmp_path / "imgs")
    assert (saved["val_fraction"], saved["test_fraction"], saved["split_seed"]) == (0.2, 0.1, 7)


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize("stream", ["no", "yes"])
def test_folder_trains_evaluates_samples_and_reconstructs(tmp_path: Path, stream: str):
    from conftest import run_vae

    root = folder(tmp_path / "imgs", n=20)
    train = run_vae("train", "--dataset", root, "--arch", "resnet", "--hidden-dim", "8", "--latent-dim", "4",
                    "--likelihood", "gaussian", "--epochs", "1", "--batch-size", "8", "--stream", stream,
                    "--num-workers", "1", cwd=tmp_path)  # fmt: skip
    assert train.returncode == 0, train.stderr
    assert "2 classes" in train.stdout
    run = tmp_path / "runs" / "imgs-gaussian" / "version_0"  # DATASET-LIKELIHOOD without -e
    for cmd in (("eval", "--iw-samples", "2"), ("sample", "--n", "4"), ("reconstruct", "--n", "4")):
        done = run_vae(*cmd, run, cwd=tmp_path / "runs")  # another working directory: paths were pinned
        assert done.returncode == 0, done.stderr
    results = __import__("json").loads((run / "eval.json").read_text())
    want = sum(expected_split(f.relative_to(root).as_posix()) == "test" for f in root.rglob("*.*"))
    assert results["n_examples"] == want
    assert (run / "samples-mean.png").is_file() and (run / "reconstructions-mean.png").is_file()


def test_cli_bad_data_is_one_line_and_leaves_no_run(tmp_path: Path, cli):
    (tmp_path / "empty").mkdir()
    result = cli("train", "--dataset", tmp_path / "empty", "--epochs", "1")
    assert result.exit_code == 2
    assert "holds no images" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
