"""Image files: find them, infer one shape, decode them to uint8 (C, H, W) tensors.

Decoding is a torch Dataset (`ImageFiles`), so the same code fills an in-memory tensor
(`decode_all`, worker processes decoding in parallel) and feeds the streaming DataLoader.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vae_cli.errors import VaeError

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MODES = {1: "L", 3: "RGB"}
ORIENTATION = 0x0112  # the EXIF tag of the camera's rotation
# PIL's own errors for a file it cannot read: not an image, truncated, bad header.
BAD_IMAGE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


@dataclass(frozen=True)
class Folder:
    """The image files under a root, sorted, with their class labels (None: no subfolders)."""

    root: Path
    files: tuple[Path, ...]
    labels: tuple[int, ...] | None
    classes: tuple[str, ...]

    def relative(self) -> list[str]:
        return [f.relative_to(self.root).as_posix() for f in self.files]


def scan(root: Path) -> Folder:
    """Every PNG/JPEG/BMP/WebP file under root, recursively. Immediate subfolders that hold
    images are the classes; an image directly in root then has no class (label -1)."""
    if not root.is_dir():
        raise VaeError(f"{root} is not a folder: pass a folder of images or a .npy/.npz file")
    files = tuple(sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
                         and not hidden(p.relative_to(root))))  # fmt: skip
    if not files:
        raise VaeError(f"{root} holds no images (searched for {', '.join(SUFFIXES)} recursively)")
    tops = [f.relative_to(root).parts for f in files]
    classes = tuple(sorted({parts[0] for parts in tops if len(parts) > 1}))
    if not classes:
        return Folder(root, files, None, ())
    index = {c: i for i, c in enumerate(classes)}
    return Folder(root, files, tuple(index[p[0]] if len(p) > 1 else -1 for p in tops), classes)


def hidden(relative: Path) -> bool:
    """A file or folder whose name starts with '.' (.git, .ipynb_checkpoints, ._x.jpg): not
    data, and not a class."""
    return any(part.startswith(".") for part in relative.parts)


def probe(path: Path) -> tuple[int, int, int] | None:
    """(channels, height, width) as displayed (EXIF rotation applied), from the file's header
    without decoding the pixels; None if unreadable."""
    try:
        with Image.open(path) as im:
            grey = im.mode in ("1", "L", "I", "I;16", "F", "LA") or (im.mode == "P" and _palette_is_grey(im))
            rotated = im.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)  # a quarter turn swaps H and W
            h, w = (im.width, im.height) if rotated else (im.height, im.width)
            return (1 if grey else 3, h, w)
    except BAD_IMAGE:
        return None


def _palette_is_grey(im: Image.Image) -> bool:
    rgb = im.convert("RGB").getextrema()
    return rgb[0] == rgb[1] == rgb[2] and bool(im.convert("RGB").getchannel(0) == im.convert("L"))


def infer_shape(
    probes: Sequence[tuple[int, int, int]], image_size: int, channels: int, say: Callable[[str], None]
) -> tuple[int, int, int]:
    """The one (C, H, W) every image is made into: given by the flags, else read from the
    headers (channels: 3 if any image is colour; size: the common size, or an error)."""
    if channels == 0:
        channels = 3 if any(p[0] == 3 for p in probes) else 1
        why = "some images are colour" if channels == 3 else "all images are grey"
        say(f"channels: {channels} ({why}; --channels 1|3 to choose)")
    if image_size:
        return channels, image_size, image_size
    sizes = Counter((p[1], p[2]) for p in probes)
    if len(sizes) > 1:
        (h1, w1), (h2, w2) = (s for s, _ in sizes.most_common(2))
        raise VaeError(
            f"the images have {len(sizes)} different sizes ({h1}x{w1}, {h2}x{w2}, ...): pass "
            f"--image-size N to resize the shorter side to N and centre-crop to NxN"
        )
    (h, w), _ = sizes.most_common(1)[0]
    say(f"image size: {h}x{w} (every image has it; --image-size N to resize and crop)")
    return channels, h, w


class Resized:
    """PIL image -> uint8 (C, H, W): convert the mode, resize the shorter side to min(H, W)
    (antialiased), centre-crop to H x W. A class, not a closure: worker processes pickle it."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        from torchvision.transforms import v2

        c, h, w = shape
        self.mode, self.hw = MODES[c], (h, w)
        self.to_tensor = v2.PILToTensor()
        self.fit = v2.Compose([v2.Resize(min(h, w), antialias=True), v2.CenterCrop((h, w))])

    def __call__(self, im: Image.Image) -> Tensor:
        im = ImageOps.exif_transpose(im)  # as a viewer shows it: phone photos carry a rotation
        x = self.to_tensor(eight_bit(im).convert(self.mode))
        return x if tuple(x.shape[1:]) == self.hw else self.fit(x)


def eight_bit(im: Image.Image) -> Image.Image:
    """16- and 32-bit integer images scaled to 8 bits (PIL's convert would clip every value
    above 255 to white); other modes as they are."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).astype(np.uint8), mode="L")
    if im.mode == "I":  # 32-bit PNG greys (PIL reads 16-bit PNGs as "I" too): their range is 16-bit
        a = np.asarray(im, dtype=np.int64)
        return Image.fromarray((np.clip(a, 0, 65535) >> 8).astype(np.uint8), mode="L")
    return im


class ImageFiles(Dataset):
    """Decodes image i to uint8 (C, H, W). An unreadable file raises a VaeError naming it,
    or, with skip_bad, gives None (left out by `drop_bad`)."""

    def __init__(
        self,
        files: Sequence[Path],
        shape: tuple[int, int, int],
        skip_bad: bool = False,
        to_tensor: Callable[[Image.Image], Tensor] | None = None,
    ) -> None:
        self.files, self.shape, self.skip_bad = list(files), shape, skip_bad
        self.to_tensor = to_tensor or Resized(shape)

    def subset(self, index: Sequence[int]) -> ImageFiles:
        return ImageFiles([self.files[i] for i in index], self.shape, self.skip_bad, self.to_tensor)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor | None:
        try:
            with Image.open(self.files[i]) as im:
                return self.to_tensor(im)
        except BAD_IMAGE as e:
            if self.skip_bad:
                return None
            raise VaeError(unreadable(self.files[i], e)) from None


def unreadable(path: Path, e: BaseException | None = None) -> str:
    why = f" ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})" if e else ""
    return f"cannot read image {path}{why}: fix or remove it, or pass --skip-bad-images"


def drop_bad(items: list[Tensor | None]) -> Tensor:
    """The streaming collate: the decodable images of a batch, stacked."""
    return torch.stack([x for x in items if x is not None])


def decode_all(data: ImageFiles, workers: int, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """Every image in one uint8 (N, C, H, W) tensor, decoded by `workers` processes, and a
    bool mask of the files that decoded (all True unless data.skip_bad)."""
    out = torch.empty((len(data), *data.shape), dtype=torch.uint8)
    ok = torch.ones(len(data), dtype=torch.bool)
    loader = DataLoader(data, batch_size=chunk, num_workers=workers, collate_fn=list)
    for b, items in enumerate(loader):
        for i, x in enumerate(items, start=b * chunk):
            if x is None:
                ok[i] = False
            else:
                out[i] = x
    return out[ok] if not ok.all() else out, ok


def size_bytes(n: int, shape: tuple[int, int, int]) -> int:
    return n * math.prod(shape)
