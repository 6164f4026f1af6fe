"""Where a run's examples come from: a registered dataset, a folder of images, or an array
file, turned into train/val/test splits of one shape.

`--dataset` takes a registered name or a path: an existing folder is an image folder, a
.npy/.npz file an array. Each split is either a tensor in memory (uint8 0..255, or float32
in [0, 1] for float arrays) or, for image folders too large for memory, an `ImageFiles`
dataset that the data module streams through worker processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vae_cli.data import arrays, images, splits
from vae_cli.data.images import ImageFiles
from vae_cli.data.registry import DATASETS
from vae_cli.errors import VaeError, did_you_mean

Split = Tensor | ImageFiles
# In memory when the uint8 splits take at most this share of the machine's memory.
HOST_MEMORY_FRACTION = 0.25


@dataclass(frozen=True)
class Source:
    shape: tuple[int, int, int]
    splits: dict[str, Split]  # train, val, test
    continuous: bool = False  # float data in [0, 1]: no 8-bit grid (docs/data.md)
    labels: dict[str, Tensor | None] = field(default_factory=dict)  # class index per example, -1: none
    classes: tuple[str, ...] = ()

    @property
    def streamed(self) -> bool:
        return isinstance(self.splits["train"], ImageFiles)


def is_path(dataset: str) -> bool:
    """A --dataset value naming data on disk rather than a registered dataset."""
    return dataset not in DATASETS and (
        Path(dataset).is_dir() or dataset.lower().endswith(arrays.SUFFIXES) or "/" in dataset
    )


def host_budget() -> int:
    """Bytes of data held in memory before a folder is streamed instead."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 8 GiB
        total = 8 * 2**30
    return int(total * HOST_MEMORY_FRACTION)


def open_source(cfg: Any, say: Callable[[str], None] = lambda _: None) -> Source:
    """The run's data, split; `say` is told what was inferred or skipped."""
    if cfg.dataset in DATASETS:
        return _registered(cfg, say)
    path = Path(cfg.dataset)
    if path.suffix.lower() in arrays.SUFFIXES:
        return _from_arrays(cfg, path, say)
    if not path.is_dir():
        raise VaeError(
            f'unknown dataset "{cfg.dataset}"{did_you_mean(cfg.dataset, DATASETS)}: it is neither a '
            f"registered dataset ({', '.join(sorted(DATASETS))}) nor an existing folder or .npy/.npz file"
        )
    return _from_folder(cfg, path, say)


# ---------------------------------------------------------------------------- registered
def _registered(cfg: Any, say: Callable[[str], None]) -> Source:
    from vae_cli.data import checks

    spec = DATASETS[cfg.dataset]
    pool, test = spec.load(Path(cfg.data_dir))
    val_size = cfg.val_size or spec.val_size
    if val_size >= len(pool):
        raise VaeError(f"val_size {val_size} leaves no training data ({len(pool)} examples)")
    if isinstance(pool, ImageFiles):  # a file-list dataset (celeba): in memory or streamed
        n = len(pool)
        parts = {"train": pool.subset(range(n - val_size)), "val": pool.subset(range(n - val_size, n)),
                 "test": test}  # fmt: skip
        return Source(spec.shape, _materialise(cfg, parts, {}, say)[0])
    if cfg.stream == "yes":
        raise VaeError(f"--stream yes streams image folders; {cfg.dataset} is held in memory: drop it")
    for x in (pool, test):
        checks.check_raw(cfg.dataset, x, spec.shape, cfg.likelihood, _support(cfg))
    return Source(spec.shape, {"train": pool[:-val_size], "val": pool[-val_size:], "test": test})


def _support(cfg: Any) -> str:
    from vae_cli.model.likelihoods import LIKELIHOODS

    return LIKELIHOODS[cfg.likelihood].support


# ---------------------------------------------------------------------------- arrays
def _from_arrays(cfg: Any, path: Path, say: Callable[[str], None]) -> Source:
    if cfg.stream == "yes":
        raise VaeError("--stream yes streams image folders; arrays are held in memory: drop it")
    x, labels = arrays.load(path)
    shape = tuple(x.shape[1:])
    kind = "floats in [0, 1] (continuous, no dequantisation)" if x.is_floating_point() else "uint8 0..255"
    say(f"{path}: {plural(len(x), 'image')} of {'x'.join(map(str, shape))}, {kind}")
    keys = [str(i) for i in range(len(x))]  # arrays have no paths: the row index is the key
    given = _given(cfg, lambda p: _array_split(p, shape, x.is_floating_point()))
    idx = _assign(cfg, keys, given, f"{path} ({len(x)} images)")
    out = {name: given.get(name, (x[idx[name]], None))[0] for name in splits.SPLITS}
    lab = {name: given[name][1] if name in given else (labels[idx[name]] if labels is not None else None)
           for name in splits.SPLITS}  # fmt: skip
    return Source(shape, out, continuous=x.is_floating_point(), labels=lab)  # type: ignore[arg-type]


def _array_split(path: Path, shape: tuple[int, ...], continuous: bool) -> tuple[Tensor, Tensor | None]:
    x, labels = arrays.load(path)
    if tuple(x.shape[1:]) != shape or x.is_floating_point() != continuous:
        kind = lambda f: "float" if f else "uint8"  # noqa: E731
        raise VaeError(
            f"{path} holds {kind(x.is_floating_point())} images of {tuple(x.shape[1:])}, the training "
            f"array {kind(continuous)} images of {shape}: pass data of the same shape and type"
        )
    return x, labels


# ---------------------------------------------------------------------------- image folders
def _from_folder(cfg: Any, root: Path, say: Callable[[str], None]) -> Source:
    folder = images.scan(root)
    files, labels = list(folder.files), folder.labels
    if not (cfg.image_size and cfg.channels):
        probes = [images.probe(f) for f in files]
        bad = [f for f, p in zip(files, probes, strict=True) if p is None]
        if bad and not cfg.skip_bad_images:
            raise VaeError(images.unreadable(bad[0]) + f" ({len(bad)} such file(s))")
        if bad:
            say(f"skipped {len(bad)} unreadable file(s), e.g. {bad[0]}")
            keep = [i for i, p in enumerate(probes) if p is not None]
            files = [files[i] for i in keep]
            labels = tuple(labels[i] for i in keep) if labels else None
            probes = [probes[i] for i in keep]
        if not files:
            raise VaeError(f"none of the image files in {root} could be read")
        shape = images.infer_shape([p for p in probes if p is not None], cfg.image_size, cfg.channels, say)
    else:
        shape = (cfg.channels, cfg.image_size, cfg.image_size)
    classes = f", {plural(len(folder.classes), 'class')} (subfolders)" if folder.classes else ""
    say(f"{root}: {plural(len(files), 'image')}{classes}")
    data = ImageFiles(files, shape, cfg.skip_bad_images)
    keys = [f.relative_to(root).as_posix() for f in files]
    given = _given(cfg, lambda p: (ImageFiles(images.scan(p).files, shape, cfg.skip_bad_images), None))
    idx = _assign(cfg, keys, given, f"{root} ({len(files)} images)")
    parts = {
        name: given[name][0] if name in given else data.subset(idx[name].tolist()) for name in splits.SPLITS
    }
    lab = {
        name: None if name in given or labels is None else torch.tensor(labels)[idx[name]]
        for name in splits.SPLITS
    }
    parts, lab = _materialise(cfg, parts, lab, say)
    return Source(shape, parts, labels=lab, classes=folder.classes)


def _materialise(
    cfg: Any, parts: dict[str, ImageFiles], labels: dict[str, Tensor | None], say: Callable[[str], None]
) -> tuple[dict[str, Split], dict[str, Tensor | None]]:
    """Decode every split into memory, unless the data is too large (or --stream yes)."""
    n = sum(len(p) for p in parts.values())
    size = images.size_bytes(n, parts["train"].shape)
    budget = host_budget()
    stream = cfg.stream == "yes" or (cfg.stream == "auto" and size > budget)
    if stream:
        say(f"streaming {n} images ({size / 2**30:.2f} GiB as uint8, budget {budget / 2**30:.1f} GiB) "
            f"through {cfg.num_workers} decoding workers")  # fmt: skip
        return dict(parts), labels
    out: dict[str, Split] = {}
    skipped = 0
    for name, part in parts.items():
        x, ok = images.decode_all(part, cfg.num_workers)
        out[name] = x
        skipped += int((~ok).sum())
        if labels.get(name) is not None and not ok.all():
            labels[name] = labels[name][ok]  # type: ignore[index]
    if skipped:
        say(f"skipped {skipped} image file(s) that could not be decoded (--skip-bad-images)")
    counts = {name: len(x) for name, x in out.items()}
    splits.check_sizes(counts, "the data", f"{skipped} unreadable image(s) skipped")
    return out, labels


# ---------------------------------------------------------------------------- splits
def _given(cfg: Any, load: Callable[[Path], tuple[Split, Tensor | None]]) -> dict[str, tuple[Split, Any]]:
    """The splits passed as separate files or folders (--val-data, --test-data)."""
    return {name: load(Path(p)) for name, p in (("val", cfg.val_data), ("test", cfg.test_data)) if p}


def _assign(cfg: Any, keys: list[str], given: dict[str, Any], what: str) -> dict[str, Tensor]:
    """Hash-split the keys into the splits not given separately (data/splits.py)."""
    val = 0.0 if "val" in given else cfg.val_fraction
    test = 0.0 if "test" in given else cfg.test_fraction
    idx = splits.assign(keys, val, test, cfg.split_seed)
    counts = {name: len(idx[name]) if name not in given else len(given[name][0]) for name in splits.SPLITS}
    rule = f"held out by hashing each key with --split-seed {cfg.split_seed} at val {val:g}, test {test:g}"
    splits.check_sizes(counts, what, rule)
    return idx


def pinned(cfg: Any) -> Any:
    """The config with user-data paths made absolute, so the saved run finds its data from
    any working directory (`vae eval` scores the same files)."""
    import dataclasses

    if not is_path(cfg.dataset):
        return cfg
    absolute = lambda p: str(Path(p).expanduser().resolve()) if p else p  # noqa: E731
    return dataclasses.replace(
        cfg, dataset=absolute(cfg.dataset), val_data=absolute(cfg.val_data), test_data=absolute(cfg.test_data)
    )


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith('s') else 's'}"
