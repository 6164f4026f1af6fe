"""Datasets and the Lightning data module.

Every dataset is held as one uint8 tensor (N, C, H, W) with values 0..255 per split, and
batches are slices of it by a shuffled index: no per-sample Python work. What the model
sees depends on the likelihood's support and is produced per batch, on the device:

    binary   -> Bernoulli(x/255) draws: fresh per training batch ("dynamic", the IWAE
                protocol), or once with a fixed seed ("static"); "none" passes x/255 through
    unit     -> (x + u)/256, u ~ U[0,1): uniform dequantisation, fresh per training batch
    discrete -> the integer values 0..255 (as float)

Validation and test splits are transformed once, each with its own fixed seed (see
fixed_transform): every evaluation of a checkpoint, and of every run on the same dataset
and support, scores exactly the same data, whatever --binarize, --val-size or the family.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from vae_cli import checks
from vae_cli.config import Config
from vae_cli.errors import VaeError
from vae_cli.likelihoods import LIKELIHOODS, Support

EVAL_SEED = 1234  # the test split's one-time binarisation / dequantisation seed (see fixed_seed)
FIXED_SEED_OFFSETS = {"test": 0, "val": 1, "train": 2}  # train: only under --binarize static
SPLIT_SEED = 0  # the fixed seed of the train/val split
ON_DEVICE_MAX_BYTES = 4 * 2**30  # splits up to this size live on the accelerator

Splits = tuple[Tensor, Tensor]  # (train pool, test), uint8 (N, C, H, W)


@dataclass(frozen=True)
class DatasetSpec:
    shape: tuple[int, int, int]
    load: Callable[[Path], Splits]
    val_size: int
    about: str


DATASETS: dict[str, DatasetSpec] = {}


def register(name: str, shape: tuple[int, int, int], val_size: int, about: str):
    def add(fn: Callable[[Path], Splits]) -> Callable[[Path], Splits]:
        DATASETS[name] = DatasetSpec(shape, fn, val_size, about)
        return fn

    return add


@register("digits", (1, 8, 8), 180, "scikit-learn's bundled 8x8 handwritten digits (offline)")
def load_digits(data_dir: Path) -> Splits:
    from sklearn.datasets import load_digits as sk_digits

    # 17 grey levels 0..16, stretched onto 0..255 so all datasets share one 8-bit scale.
    x = torch.from_numpy(sk_digits().images).mul(255 / 16).round().to(torch.uint8)
    x = x.unsqueeze(1)[torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))]
    return x[360:], x[:360]


@register("shapes32", (3, 32, 32), 250, "synthetic 32x32 RGB coloured shapes, fixed seed (for tests)")
@functools.lru_cache(maxsize=1)  # deterministic and read-only downstream: draw it once per process
def load_shapes32(data_dir: Path) -> Splits:
    """Test-only synthetic data, drawn procedurally (no files): 2500 + 500 RGB images of
    one or two filled discs or rectangles in random colours on a random dark background."""
    n, size = 3000, 32
    g = torch.Generator().manual_seed(SPLIT_SEED)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    img = (torch.rand(n, 3, 1, 1, generator=g) * 0.3).expand(n, 3, size, size).clone()
    for layer in range(2):
        cy, cx = (torch.rand(2, n, 1, 1, generator=g) * 20 + 6).unbind(0)
        r = torch.rand(n, 1, 1, generator=g) * 6 + 3
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        rect = ((yy - cy).abs() <= r) & ((xx - cx).abs() <= 0.6 * r)
        kind = torch.rand(n, 1, 1, generator=g) < 0.5
        mask = torch.where(kind, disc, rect)
        if layer == 1:  # the second shape on only half of the images
            mask &= torch.rand(n, 1, 1, generator=g) < 0.5
        colour = torch.rand(n, 3, 1, 1, generator=g) * 0.7 + 0.3
        img = torch.where(mask.unsqueeze(1), colour.expand_as(img), img)
    x = (img * 255).round().to(torch.uint8)
    return x[500:], x[:500]


def _torchvision(cls_name: str, folder: str, data_dir: Path) -> Splits:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    _expect_files(cls, cls_name, folder, data_dir)
    train, test = _open_quietly(
        cls, data_dir,
        missing=f"{cls_name} not found in {data_dir / folder}/raw and the download failed "
        f"({{error}}): put the four *-ubyte.gz files there, or pass --data-dir to a folder "
        f"that holds {folder}/raw/",
        unwritable=f"{data_dir / folder} is not writable and torchvision must unpack the .gz "
        f"files there: copy the folder somewhere writable and pass that as --data-dir",
    )  # fmt: skip
    return _nchw(train.data), _nchw(test.data)


def _open_quietly(cls, data_dir: Path, missing: str, unwritable: str) -> tuple[Any, Any]:
    """A torchvision dataset's train and test splits; its failures as one-line VaeErrors."""
    try:
        # torchvision prints its download attempts; the error below says what matters.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return cls(str(data_dir), train=True, download=True), cls(
                str(data_dir), train=False, download=True
            )
    except PermissionError:
        raise VaeError(unwritable) from None
    except Exception as e:
        raise VaeError(missing.format(error=type(e).__name__)) from None


def _expect_files(cls, cls_name: str, folder: str, data_dir: Path) -> None:
    """Fail in milliseconds, not after a download attempt, when the files are not there.

    A dataset folder that exists is taken as the user's copy: missing files are an error
    and nothing is downloaded into it. With no such folder, torchvision may download, but
    only after one short probe shows the mirror is reachable (offline, its retries over
    several mirrors take many seconds before failing).
    """
    raw = data_dir / folder / "raw"
    names = [name for name, _ in cls.resources]
    missing = [n for n in names if not (raw / n).exists() and not (raw / n.removesuffix(".gz")).exists()]
    if not missing:
        return
    hint = f"put the four *-ubyte.gz files there, or pass --data-dir to a folder that holds {folder}/raw/"
    if (data_dir / folder).exists():
        raise VaeError(f"{cls_name} not found in {raw}: missing {', '.join(missing)}; {hint}")
    if not _reachable(cls.mirrors[0]):
        raise VaeError(f"{cls_name} not found in {raw} and the download server is unreachable: {hint}")


def _reachable(url: str, timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    u = urlparse(url)
    try:
        socket.create_connection(
            (u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout
        ).close()
    except OSError:
        return False
    return True


def _nchw(x) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim == 3:  # (N, H, W) grayscale
        return x.unsqueeze(1).contiguous()
    return x.permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)


@register("mnist", (1, 28, 28), 5000, "MNIST via torchvision (DIR/MNIST/raw)")
def load_mnist(data_dir: Path) -> Splits:
    return _torchvision("MNIST", "MNIST", data_dir)


@register("fashion-mnist", (1, 28, 28), 5000, "Fashion-MNIST via torchvision")
def load_fashion_mnist(data_dir: Path) -> Splits:
    return _torchvision("FashionMNIST", "FashionMNIST", data_dir)


@register("cifar10", (3, 32, 32), 5000, "CIFAR-10 via torchvision (DIR/cifar-10-batches-py)")
def load_cifar10(data_dir: Path) -> Splits:
    import torchvision

    train, test = _open_quietly(
        torchvision.datasets.CIFAR10, data_dir,
        missing=f"CIFAR-10 not found in {data_dir}/cifar-10-batches-py and the download failed "
        f"({{error}}): put cifar-10-python.tar.gz in {data_dir}",
        unwritable=f"{data_dir} is not writable: pass --data-dir a writable folder for CIFAR-10",
    )  # fmt: skip
    return _nchw(train.data), _nchw(test.data)


@register("binarized-mnist", (1, 28, 28), 10000, "Larochelle's statically binarised MNIST")
def load_binarized_mnist(data_dir: Path) -> Splits:
    """The .amat files; train+valid form the pool so val_size=10000 gives the usual split."""
    folder = data_dir / "BinarizedMNIST"

    def read(split: str) -> Tensor:
        for path in (
            folder / f"binarized_mnist_{split}.amat",
            folder / f"binarized_mnist_{split}.amat.gz",
        ):
            if path.exists():
                raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
                # one character per value, each followed by a separator
                bits = torch.frombuffer(bytearray(raw), dtype=torch.uint8)[0::2] - ord("0")
                return (bits.view(-1, 1, 28, 28) * 255).to(torch.uint8)
        raise VaeError(
            f"binarized_mnist_{split}.amat(.gz) not found in {folder}: download Larochelle's "
            f"binarized MNIST files there, or pass --data-dir to a folder holding BinarizedMNIST/"
        )

    # Order matters for the split below: valid comes last, so it becomes the val split.
    return torch.cat([read("train"), read("valid")]), read("test")


def to_unit_support(x: Tensor, support: Support, binarize: str, generator=None) -> Tensor:
    """uint8 0..255 -> what the likelihood scores; random where the protocol says so."""
    if support == "binary":
        if binarize == "none":
            return x.float() / 255
        # Bernoulli(x/255) as 1[255 u < x], u ~ U[0,1): the same draw as torch.bernoulli,
        # whose per-element CPU kernel took ~2.5x longer than this vectorised uniform fill.
        u = torch.rand(x.shape, generator=generator, device=x.device)
        return (u * 255 < x).float()
    if support == "unit":
        u = torch.rand(x.shape, generator=generator, device=x.device)
        return (x.float() + u) / 256
    return x.float()


def fixed_seed(split: str) -> int:
    """The seed of a split's one-time transform: test 1234, val 1235, static train 1236."""
    return EVAL_SEED + FIXED_SEED_OFFSETS[split]


def fixed_transform(x: Tensor, split: str, support: Support, binarize: str) -> Tensor:
    """A split's one-time binarisation / dequantisation, a function of (data, split) alone:
    it uses the first torch.rand(x.shape) draw of a fresh CPU generator seeded fixed_seed(split),
    so no other split's draw (and no setting that sizes one) can shift it."""
    return to_unit_support(x, support, binarize, torch.Generator().manual_seed(fixed_seed(split)))


def to_image(x: Tensor, support: Support) -> Tensor:
    """Model-space values -> [0, 1] for display."""
    if support == "discrete":
        return x / 255
    return x.clamp(0, 1)


def bits_offset(support: Support) -> float:
    """Bits per dim to add to a density on [0,1] to compare with a pmf over 256 levels."""
    return math.log2(256) if support == "unit" else 0.0


class TensorBatches:
    """Batches of an in-memory tensor by index: a DataLoader without per-sample work.

    Sharded over ranks without padding (eval scores every example exactly once); the
    shuffle order is a pure function of (seed, epoch), so it is the same after a resume.
    Evaluation shards whole fixed batches (batch b is examples [bB, (b+1)B), rank r takes
    b = r, r+W, ...), so every batch, and the noise seeded from its index, is the same
    whatever the world size W: see eval_batch_index.

    Training yields `steps_per_item` consecutive mini-batches of the shuffle as one tensor
    (the module splits it and takes one optimiser step per mini-batch): the mini-batches are
    the same for any steps_per_item, only Lightning sees fewer, larger items.
    """

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_fn: Callable[[], int] = lambda: 0,
        steps_per_item: int = 1,
    ) -> None:
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.steps_per_item = steps_per_item if shuffle else 1
        self.item_size = batch_size * self.steps_per_item
        self.seed, self.rank, self.world_size, self.epoch_fn = seed, rank, world_size, epoch_fn

    def _indices(self) -> Tensor:
        """This rank's share of the (seed, epoch) shuffle, on the data's device."""
        g = torch.Generator().manual_seed(self.seed + 7919 * self.epoch_fn())
        perm = torch.randperm(len(self.data), generator=g)
        per_rank = len(self.data) // self.world_size  # equal step counts on every rank
        return perm[self.rank * per_rank : (self.rank + 1) * per_rank].to(self.data.device)

    def _eval_starts(self) -> range:
        # whole global batches dealt round-robin: rank r gets batches r, r + W, r + 2W, ...
        step = self.batch_size * self.world_size
        return range(self.rank * self.batch_size, len(self.data), step)

    def __len__(self) -> int:
        if self.shuffle:
            return math.ceil(self.steps / self.steps_per_item)
        return len(self._eval_starts())

    @property
    def steps(self) -> int:
        """Mini-batches per pass on this rank (more than len() when items hold several)."""
        if self.shuffle:
            return math.ceil(len(self.data) // self.world_size / self.batch_size)
        return len(self._eval_starts())

    def __iter__(self) -> Iterator[Tensor]:
        if not self.shuffle:
            for start in self._eval_starts():
                yield self.data[start : start + self.batch_size]
            return
        idx = self._indices()
        epoch = self.epoch_fn()
        skip, self._resume = (
            (self._resume[1], None) if self._resume and self._resume[0] == epoch else (0, None)
        )
        self._position = (epoch, skip)
        for i, start in enumerate(range(skip * self.item_size, len(idx), self.item_size), start=skip + 1):
            self._position = (epoch, i)  # counted before the yield: the batch is then in use
            yield self.data[idx[start : start + self.item_size]]

    # Lightning's stateful-iterable protocol: the fit loop saves state_dict() in every
    # checkpoint and calls load_state_dict() before iter() on resume, so a run resumed
    # mid-epoch continues with the batch after the last one it trained on. (Lightning does
    # not prefetch from an iterable with a __len__, so "yielded" is "consumed".)
    _position: tuple[int, int] = (0, 0)
    _resume: tuple[int, int] | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._position[0], "batches": self._position[1]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["batches"]))


def eval_batch_index(local_index: int, rank: int, world_size: int) -> int:
    """The global index of a rank's local eval batch under TensorBatches' round-robin deal."""
    return local_index * world_size + rank


class VAEDataModule(pl.LightningDataModule):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.spec = DATASETS[cfg.dataset]
        self.support: Support = LIKELIHOODS[cfg.likelihood].support
        self.shape = self.spec.shape
        self.dims = math.prod(self.shape)
        self.bits_offset = bits_offset(self.support)
        self.splits: dict[str, Tensor] = {}
        self.eval_split = "test"  # what test_dataloader serves; `vae eval --split val` changes it

    @property
    def normalised(self) -> bool:
        """False when Bernoulli scores non-binary data: then log_prob is no density."""
        return not (self.support == "binary" and self.cfg.binarize == "none")

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        pool, test = self.spec.load(Path(self.cfg.data_dir))
        for x in (pool, test):
            checks.check_raw(self.cfg.dataset, x, self.shape, self.cfg.likelihood, self.support)
        val_size = self.cfg.val_size or self.spec.val_size
        if val_size >= len(pool):
            raise VaeError(f"val_size {val_size} leaves no training data ({len(pool)} examples)")
        train, val = pool[:-val_size], pool[-val_size:]
        fixed = lambda x, split: fixed_transform(x, split, self.support, self.cfg.binarize)  # noqa: E731
        static = self.support == "binary" and self.cfg.binarize == "static"
        self.splits = {
            # uint8 until the batch is on the device, unless binarised once for good
            "train": fixed(train, "train") if static else train,
            "val": fixed(val, "val"),
            "test": fixed(test, "test"),
        }
        for split in ("val", "test"):
            checks.check_support(self.splits[split], self.support, self.cfg.likelihood,
                                 f"the {self.cfg.dataset} {split} split", self.cfg.binarize)  # fmt: skip

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor | tuple[Tensor, ...]:
        """A training item becomes its mini-batches (see TensorBatches), each put on the
        support separately: the random draws then run on cache-sized tensors, measured
        5-10% faster than one draw over a whole item of 8 batches."""
        if self.trainer is not None and self.trainer.training:
            return tuple(self._on_support(x) for x in batch.split(self.cfg.batch_size))
        return self._on_support(batch)

    def _on_support(self, batch: Tensor) -> Tensor:
        if batch.dtype == torch.uint8:  # only the dynamic training split arrives as raw uint8
            return to_unit_support(batch, self.support, self.cfg.binarize)
        return batch

    def to_device(self, device: torch.device) -> None:
        """Hold the splits on the accelerator, once: batches are then slices of a device
        tensor, with no host->device copy per batch. MNIST-class data fits easily."""
        size = sum(t.numel() * t.element_size() for t in self.splits.values())
        if device.type != "cpu" and size <= ON_DEVICE_MAX_BYTES:
            self.splits = {k: v.to(device) for k, v in self.splits.items()}

    def _batches(self, split: str, shuffle: bool) -> TensorBatches:
        trainer = self.trainer
        if trainer is not None:
            self.to_device(trainer.strategy.root_device)
        world = trainer.world_size if trainer else 1
        n_batches = math.ceil(len(self.splits[split]) / self.cfg.batch_size)
        if not shuffle and n_batches < world:
            # a rank without a batch would skip the metric all-reduce the others wait in
            raise VaeError(
                f"the {split} split makes {n_batches} batches of {self.cfg.batch_size} for "
                f"{world} processes: each needs at least one, pass a smaller --batch-size"
            )
        return TensorBatches(
            self.splits[split],
            self.cfg.batch_size,
            shuffle=shuffle,
            seed=self.cfg.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=world,
            epoch_fn=lambda: trainer.current_epoch if trainer else 0,
            steps_per_item=self.cfg.steps_per_call,
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches(self.eval_split, shuffle=False)
