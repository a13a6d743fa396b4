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


def image_list(data_dir: Path, in_distribution: str, split: str) -> tuple[Path, list[str]]:
    """The images folder and the lines of `test_<split>.txt` for an in-distribution set; a
    DataMissingError that says where OpenOOD's archives go when they are not there."""
    root = _root(Path(data_dir))
    where = Path(data_dir) / "openood"
    if root is None:
        raise DataMissingError(split, f"{split} ({in_distribution}, OpenOOD v1.5): "
                               f"{where / 'benchmark_imglist'} and {where / 'images_classic'} "
                               f"not found; extract {ORIGIN} into {where}")
    listing = root / "benchmark_imglist" / in_distribution / f"test_{split}.txt"
    if not listing.is_file():
        raise DataMissingError(split, f"{split} ({in_distribution}, OpenOOD v1.5): {listing} not "
                               f"found; extract {ORIGIN} into {where}")
    lines = [line.strip("\n") for line in listing.read_text().splitlines() if line.strip()]
    return root / "images_classic", lines


def _label(extra: str) -> int:
    value = ast.literal_eval(extra.strip()) if extra.strip() else 0
    return int(value.get("label", 0)) if isinstance(value, dict) else int(value)


def _open(path: Path, size: int) -> np.ndarray:
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    with Image.open(path) as img:
        img = TF.resize(img.convert("RGB"), size, InterpolationMode.BILINEAR)
        return np.asarray(TF.center_crop(img, size))


def probe(data_dir: Path, in_distribution: str, split: str) -> None:
    """Every image the list names is there (not decoded)."""
    images, lines = image_list(data_dir, in_distribution, split)
    for line in lines:
        if not (images / line.split(" ", 1)[0]).is_file():
            raise DataMissingError(split, f"{split} ({in_distribution}, OpenOOD v1.5): "
                                   f"{images / line.split(' ', 1)[0]} not found; extract "
                                   f"{ORIGIN} into {images.parent}")


def load(data_dir: Path, in_distribution: str, split: str, size: int) -> ImageSet:
    """The images of `test_<split>.txt` as uint8 3 x size x size, with the list's labels."""
    images, lines = image_list(data_dir, in_distribution, split)
    out = np.empty((len(lines), size, size, 3), dtype=np.uint8)
    labels = np.empty(len(lines), dtype=np.int64)
    for i, line in enumerate(lines):
        name, _, extra = line.partition(" ")
        if name.startswith("/") or ".." in Path(name).parts:
            raise BenchError(f"{images.parent}/benchmark_imglist/{in_distribution}/test_{split}"
                             f".txt, line {i + 1}: {name!r} is not a path inside images_classic")
        try:
            out[i] = _open(images / name, size)
        except (OSError, SyntaxError, ValueError) as exc:
            raise BenchError(f"{images / name}: not a readable image ({type(exc).__name__}: "
                             f"{exc})") from None
        labels[i] = _label(extra)
    classes = tuple(str(c) for c in range(int(labels.max()) + 1)) if len(labels) else ()
    return ImageSet(torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(),
                    torch.from_numpy(labels), classes, split)
