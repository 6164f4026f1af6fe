"""The built-in datasets, each a loader returning (train pool, test) as uint8 (N, C, H, W)."""

import contextlib
import functools
import gzip
import io
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vae_cli.data.registry import SPLIT_SEED, Splits, register
from vae_cli.errors import VaeError

DIGITS_TEST = 360  # the first 360 of the shuffled digits are the test split


def digits_order(n: int) -> Tensor:
    """The fixed shuffle of the digits (shared with their labels, data/labels.py)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))


@register("digits", (1, 8, 8), 180, "scikit-learn's bundled 8x8 handwritten digits (offline)")
def load_digits(data_dir: Path) -> Splits:
    from sklearn.datasets import load_digits as sk_digits

    # 17 grey levels 0..16, stretched onto 0..255 so all datasets share one 8-bit scale.
    x = torch.from_numpy(sk_digits().images).mul(255 / 16).round().to(torch.uint8)
    x = x.unsqueeze(1)[digits_order(len(x))]
    return x[DIGITS_TEST:], x[:DIGITS_TEST]


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
    train, test = open_torchvision(cls_name, folder, data_dir)
    return _nchw(train.data), _nchw(test.data)


def open_torchvision(cls_name: str, folder: str, data_dir: Path) -> tuple[Any, Any]:
    """torchvision's (train, test) datasets of an MNIST-format folder (labels.py reads
    their .targets)."""
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    _expect_files(cls, cls_name, folder, data_dir)
    return _open_quietly(
        cls, data_dir,
        missing=f"{cls_name} not found in {data_dir / folder}/raw and the download failed "
        f"({{error}}): put the four *-ubyte.gz files there, or pass --data-dir to a folder "
        f"that holds {folder}/raw/",
        unwritable=f"{data_dir / folder} is not writable and torchvision must unpack the .gz "
        f"files there: copy the folder somewhere writable and pass that as --data-dir",
    )  # fmt: skip


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


def _read_amat(path: Path) -> Tensor:
    """Larochelle's .amat: per image a line of 784 values "0"/"1", each followed by a space or
    the newline. Anything else (a truncated download, another file) is a one-line error."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise VaeError(f"cannot read {path} ({type(e).__name__}): download the file again") from None
    chars = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
    per_image = 28 * 28 * 2  # one character per value, each followed by a separator
    values, seps = chars[0::2], chars[1::2]
    ok = (
        len(chars) > 0
        and len(chars) % per_image == 0
        and bool(((values == ord("0")) | (values == ord("1"))).all())
        and bool(((seps == ord(" ")) | (seps == ord("\n"))).all())
    )
    if not ok:
        raise VaeError(
            f"{path} is not a binarized-MNIST .amat file (lines of 784 space-separated 0/1 values): "
            f"download it again"
        )
    return ((values - ord("0")).view(-1, 1, 28, 28) * 255).to(torch.uint8)


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
                return _read_amat(path)
        raise VaeError(
            f"binarized_mnist_{split}.amat(.gz) not found in {folder}: download Larochelle's "
            f"binarized MNIST files there, or pass --data-dir to a folder holding BinarizedMNIST/"
        )

    # Order matters for the split below: valid comes last, so it becomes the val split.
    return torch.cat([read("train"), read("valid")]), read("test")
