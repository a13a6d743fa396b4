"""OpenOOD v1.5's test sets, read exactly as its benchmark defines them: an image list
(`benchmark_imglist/<in-distribution set>/test_<set>.txt`, one "<path> <label or dict>" per line)
over its `images_classic/` folder, each image opened as RGB, resized so that its shorter side is
the in-distribution size (bilinear, torchvision's `Resize`) and centre-cropped (`CenterCrop`), as
OpenOOD's test preprocessor does before normalising.

    <data dir>/openood/benchmark_imglist/cifar10/test_cifar100.txt   (or <data dir>/benchmark_imglist/...)
    <data dir>/openood/images_classic/cifar100/test/...               (or <data dir>/images_classic/...)
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch

from bench.datasets import ImageSet
from bench.errors import BenchError, DataMissingError

ORIGIN = ("OpenOOD v1.5's benchmark_imglist and images_classic archives (github.com/Jingkang50/"
          "OpenOOD: `python scripts/download/download.py --contents datasets --datasets "
          "ood_v1.5`, or the Google Drive links of its README)")


def _root(data_dir: Path) -> Path | None:
    for root in (data_dir / "openood", data_dir):
        if (root / "benchmark_imglist").is_dir() and (root / "images_classic").is_dir():
            return root
    return None


# the suite's data set -> OpenOOD's name for it (its folder and list names)
OPENOOD_NAMES = {"cifar100-fine": "cifar100"}


def image_list(data_dir: Path, in_distribution: str, split: str, listing: str = "test"
               ) -> tuple[Path, list[str]]:
    """The images folder and the lines of `<listing>_<split>.txt` (test, or val: the lists its
    evaluator tunes on) for an in-distribution set; a DataMissingError that says where
    OpenOOD's archives go when they are not there."""
    in_distribution = OPENOOD_NAMES.get(in_distribution, in_distribution)
    split = OPENOOD_NAMES.get(split, split)
    root = _root(Path(data_dir))
    where = Path(data_dir) / "openood"
    if root is None:
        raise DataMissingError(split, f"{split} ({in_distribution}, OpenOOD v1.5): "
                               f"{where / 'benchmark_imglist'} and {where / 'images_classic'} "
                               f"not found; extract {ORIGIN} into {where}")
    path = root / "benchmark_imglist" / in_distribution / f"{listing}_{split}.txt"
    if not path.is_file():
        raise DataMissingError(split, f"{split} ({in_distribution}, OpenOOD v1.5): {path} not "
                               f"found; extract {ORIGIN} into {where}")
    lines = [line.strip("\n") for line in path.read_text().splitlines() if line.strip()]
    return root / "images_classic", lines


MAX_CLASSES = 1000  # the most classes of an OpenOOD v1.5 benchmark (ImageNet-1k)
MAX_PIXELS = 4096 * 4096  # an image larger than this is not one of OpenOOD's (a bomb)


def parse(images: Path, lines: list[str], where: str) -> list[tuple[str, int]]:
    """(path inside images_classic, label) of each line, every line checked: "<path>" or
    "<path> <integer label or {'label': ...}>", the path relative and inside the folder, the
    label an integer from -1 (OOD) to MAX_CLASSES - 1; BenchError naming the line otherwise."""
    out = []
    for i, line in enumerate(lines, 1):
        name, _, extra = line.strip().partition(" ")
        if name.startswith("/") or ".." in Path(name).parts or not name:
            raise BenchError(f"{where}, line {i}: {name[:80]!r} is not a path inside "
                             "images_classic")
        try:
            value = ast.literal_eval(extra.strip()) if extra.strip() else 0
            label = value.get("label", 0) if isinstance(value, dict) else value
            if isinstance(label, bool) or not isinstance(label, int):
                raise ValueError(label)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise BenchError(f"{where}, line {i}: {extra.strip()[:60]!r} is not a label (an "
                             "integer, or a dict with one; one per line)") from None
        if not -1 <= label < MAX_CLASSES:
            raise BenchError(f"{where}, line {i}: label {label} is outside -1..{MAX_CLASSES - 1}")
        out.append((name, label))
    return out


def _open(path: Path, size: int) -> np.ndarray:
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    with Image.open(path) as img:  # the header only: the size is checked before decoding
        if img.width * img.height > MAX_PIXELS:
            raise BenchError(f"{path}: {img.width} x {img.height} pixels, more than an "
                             f"OpenOOD image has ({MAX_PIXELS:,} at most)")
        img = TF.resize(img.convert("RGB"), size, InterpolationMode.BILINEAR)
        return np.asarray(TF.center_crop(img, size))


def _where(images: Path, in_distribution: str, split: str, listing: str) -> str:
    return (f"{images.parent}/benchmark_imglist/{OPENOOD_NAMES.get(in_distribution, in_distribution)}"
            f"/{listing}_{OPENOOD_NAMES.get(split, split)}.txt")


def probe(data_dir: Path, in_distribution: str, split: str, listing: str = "test") -> None:
    """Every line of the list is well formed and names an image that is there (not decoded):
    checked before anything runs."""
    images, lines = image_list(data_dir, in_distribution, split, listing)
    where = _where(images, in_distribution, split, listing)
    for name, _ in parse(images, lines, where):
        if not (images / name).is_file():
            raise DataMissingError(split, f"{split} ({in_distribution}, OpenOOD v1.5): "
                                   f"{images / name} not found; extract {ORIGIN} into "
                                   f"{images.parent}")


def load(data_dir: Path, in_distribution: str, split: str, size: int, listing: str = "test"
         ) -> ImageSet:
    """The images of `<listing>_<split>.txt` as uint8 3 x size x size, with the list's labels."""
    from PIL import Image

    images, lines = image_list(data_dir, in_distribution, split, listing)
    where = _where(images, in_distribution, split, listing)
    entries = parse(images, lines, where)
    out = np.empty((len(entries), size, size, 3), dtype=np.uint8)
    labels = np.empty(len(entries), dtype=np.int64)
    for i, (name, label) in enumerate(entries):
        try:
            out[i] = _open(images / name, size)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise BenchError(f"{images / name}: not a readable image ({type(exc).__name__}: "
                             f"{exc})") from None
        labels[i] = label
    classes = tuple(str(c) for c in range(int(labels.max()) + 1)) if len(labels) else ()
    return ImageSet(torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(),
                    torch.from_numpy(labels), classes, split)
