"""User data: image folders and arrays, hash splits, streaming, CelebA's layout, bad data.

Every test makes its own files under tmp_path (PIL, numpy): offline, a few seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vae_cli.config import Config
from vae_cli.data import sources, splits
from vae_cli.data.datamodule import VAEDataModule
from vae_cli.data.streaming import StreamBatches
from vae_cli.errors import VaeError


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


# ---------------------------------------------------------------------------- folders
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


def test_too_few_images_for_the_splits(tmp_path: Path):
    for i in range(3):
        save(tmp_path / "few" / f"{i}.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(VaeError, match=r"empty .*split"):
        setup(dataset=tmp_path / "few")


def test_separate_val_and_test_folders(tmp_path: Path):
    train = folder(tmp_path / "train", n=10)
    val = folder(tmp_path / "val", n=3)
    test = folder(tmp_path / "test", n=4)
    dm = setup(dataset=train, val_data=val, test_data=test)
    assert {k: len(v) for k, v in dm.source.splits.items()} == {"train": 20, "val": 6, "test": 8}


# ---------------------------------------------------------------------------- arrays
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


def test_npz_labels_are_kept_for_plots(tmp_path: Path):
    x = np.zeros((50, 4, 4), np.uint8)
    y = np.arange(50) % 5
    np.savez(tmp_path / "l.npz", x=x, labels=y)
    dm = setup(dataset=tmp_path / "l.npz")
    rows = [i for i in range(50) if expected_split(str(i)) == "test"]
    assert dm.labels["test"].tolist() == (y[rows]).tolist()


# ---------------------------------------------------------------------------- streaming
def test_streaming_serves_the_in_memory_batches(tmp_path: Path):
    """Same examples in the same order, per epoch and rank; noise applied on the batch."""
    rng = np.random.default_rng(0)
    for i in range(45):
        save(tmp_path / "s" / f"{i:02d}.png", rng.integers(0, 256, (6, 6, 3)).astype(np.uint8))
    kw = dict(dataset=tmp_path / "s", likelihood="bernoulli", steps_per_call=2, num_workers=2)
    mem, streamed = setup(stream="no", **kw), setup(stream="yes", **kw)
    assert streamed.source.streamed and not mem.source.streamed
    for shuffle, split in ((True, "train"), (False, "val"), (False, "test")):
        for epoch in (0, 1):
            how = dict(seed=5, epoch_fn=lambda e=epoch: e, steps_per_item=2)
            in_memory = list(
                mem._batches(split, shuffle).__class__(mem.source.splits[split], 4, shuffle, **how)
            )
            workers = 2 if (split, epoch) == ("train", 0) else 0  # worker processes once (slow start)
            stream = list(StreamBatches.over(streamed.splits[split], workers, 4, shuffle, **how))
            if not shuffle:  # eval batches carry their global index, which seeds their noise
                assert [int(i) for _, i in stream] == list(range(len(stream)))
                stream = [x for x, _ in stream]
            assert len(stream) == len(in_memory) > 0
            assert all(torch.equal(a, b) for a, b in zip(stream, in_memory, strict=True))


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


# ---------------------------------------------------------------------------- CelebA
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
    from tests.conftest import run_vae

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
