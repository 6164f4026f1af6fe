"""CelebA, the aligned-and-cropped faces, at the usual 64x64: centre crop 148x148 of the
178x218 image, then resize to 64x64 (as in AntixK/PyTorch-VAE's CelebA data module).

The files are found through torchvision.datasets.CelebA, in its layout (DIR/celeba/:
img_align_celeba/*.jpg and the five annotation lists, identity_CelebA.txt and
list_*.txt); its official partition gives the splits (train 162770, valid 19867, test
19962). torchvision's own check also compares the MD5 sums of the five lists; like
PyTorch-VAE, this loader checks that the files are there but not their sums, so a copy
from another mirror (or a small fake tree, as in the tests) loads. Nothing is downloaded:
torchvision's Google-Drive download needs gdown and is often refused by quota.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch import Tensor

from vae_cli.data.images import MODES, ImageFiles
from vae_cli.data.registry import register
from vae_cli.errors import VaeError

SHAPE = (3, 64, 64)
CROP = 148  # pixels of the 178-pixel-wide aligned image kept around the centre


class CelebaCrop:
    """PIL image -> uint8 (3, 64, 64): centre crop 148, resize to 64 (antialiased)."""

    def __init__(self) -> None:
        from torchvision.transforms import v2

        self.steps = v2.Compose([v2.PILToTensor(), v2.CenterCrop(CROP), v2.Resize(SHAPE[1:], antialias=True)])

    def __call__(self, im: Image.Image) -> Tensor:
        return self.steps(im.convert(MODES[3]))


def _files(data_dir: Path, split: str) -> list[Path]:
    """The image paths of an official split, read by torchvision's CelebA."""
    import torchvision

    class Layout(torchvision.datasets.CelebA):
        def _check_integrity(self) -> bool:  # presence, not MD5 sums: see the module docstring
            return not missing(Path(self.root))

    gone = missing(data_dir)
    if gone:
        raise VaeError(
            f"CelebA not found in {data_dir / 'celeba'}: missing {', '.join(gone)}; put torchvision's "
            f"CelebA files there (img_align_celeba/ and the annotation lists), or pass --data-dir to a "
            f"folder that holds celeba/"
        )
    ds = Layout(str(data_dir), split=split, target_type=[])
    return [data_dir / "celeba" / "img_align_celeba" / name for name in ds.filename]


def missing(data_dir: Path) -> list[str]:
    import torchvision

    folder = data_dir / torchvision.datasets.CelebA.base_folder
    names = [n for _, _, n in torchvision.datasets.CelebA.file_list if not n.endswith((".zip", ".7z"))]
    gone = [n for n in names if not (folder / n).is_file()]
    return gone + ([] if (folder / "img_align_celeba").is_dir() else ["img_align_celeba/"])


@register("celeba", SHAPE, 19867, "CelebA aligned faces, centre crop 148 -> 64x64, via torchvision's layout")
def load_celeba(data_dir: Path) -> tuple[ImageFiles, ImageFiles]:
    """(train + valid, test) as image-file datasets; valid comes last, so the default
    val_size (19867) makes the official validation split the val split."""
    crop = CelebaCrop()
    pool = ImageFiles(_files(data_dir, "train") + _files(data_dir, "valid"), SHAPE, to_tensor=crop)
    return pool, ImageFiles(_files(data_dir, "test"), SHAPE, to_tensor=crop)
