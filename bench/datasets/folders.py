"""Image-folder data sets distributed as archives by their authors (OOD sets, ImageNet-30).

Each lives in a folder under the data dir (``--data-dir``, default ``$BENCH_DATA``); any of the
folder names listed below is accepted, images are found recursively (png, jpg, jpeg, bmp), sorted
by path, and decoded to RGB uint8 at the set's size.

    <data dir>/LSUN_resize/        ODIN release, 10,000 images 32x32    (lsun_resize)
    <data dir>/Imagenet_resize/    ODIN release, 10,000 images 32x32    (imagenet_resize)
    <data dir>/LSUN_fix/           CSI's re-made set, 32x32             (lsun_fix)
    <data dir>/Imagenet_FIX/       CSI's re-made set, 32x32             (imagenet_fix)
    <data dir>/ImageNet30/one_class_train/<class>/*.JPEG and one_class_test/<class>/*.JPEG
                                   CSI's ImageNet-30 layout, read at 64 px (imagenet30)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.datasets import DataSource, ImageSet
from bench.errors import BenchError, DataMissingError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}

# name -> (accepted folder names, image size, where the archive comes from)
FOLDER_SETS = {
    "lsun_resize": (("LSUN_resize", "lsun_resize", "LSUN"), 32,
                    "the ODIN release (LSUN_resize.tar.gz, github.com/facebookresearch/odin)"),
    "imagenet_resize": (("Imagenet_resize", "imagenet_resize", "Imagenet"), 32,
                        "the ODIN release (Imagenet_resize.tar.gz, github.com/facebookresearch/odin)"),
    "lsun_fix": (("LSUN_fix", "lsun_fix", "LSUN_FIX"), 32,
                 "CSI's release (LSUN_fix.tar.gz, github.com/alinlab/CSI)"),
    "imagenet_fix": (("Imagenet_FIX", "imagenet_fix", "Imagenet_fix"), 32,
                     "CSI's release (Imagenet_FIX.tar.gz, github.com/alinlab/CSI)"),
    "imagenet30": (("ImageNet30", "imagenet30", "one_class_imagenet30"), 64,
                   "Hendrycks et al.'s ImageNet-30 (github.com/hendrycks/ss-ood), in CSI's layout"),
}


def _find_folder(name: str, source: DataSource) -> Path:
    folders, _, origin = FOLDER_SETS[name]
    for folder in folders:
        if (source.data_dir / folder).is_dir():
            return source.data_dir / folder
    raise DataMissingError(
        name, missing=f"folder {source.data_dir / folders[0]} not found",
        fix=f"it is not downloadable automatically: extract {origin} there")


def _not_an_image(name: str, path: Path, exc: Exception) -> BenchError:
    return BenchError(f"{name}: {path} is not a readable image ({type(exc).__name__}: {exc}); "
                      "remove it or replace it with the file from the original archive")


def _decode(name: str, paths: list[Path], size: int) -> torch.Tensor:
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR)
                out[i] = np.asarray(img)
        except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for bad files
            raise _not_an_image(name, path, exc) from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _check_headers(name: str, paths: list[Path]) -> None:
    """Every file opens as an image (its header is read, its pixels are not decoded)."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as img:
                img.size  # noqa: B018 - the header is parsed on open
        except (OSError, SyntaxError, ValueError) as exc:
            raise _not_an_image(name, path, exc) from None


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _ood_folder(name: str, split: str, source: DataSource) -> ImageSet:
    if split != "test":
        raise BenchError(f"{name} is an OOD test set; it has no {split} split")
    paths = _ood_paths(name, source)
    images = _decode(name, paths, FOLDER_SETS[name][1])
    return ImageSet(images, torch.zeros(len(paths), dtype=torch.int64), ("ood",), name)


def load_lsun_resize(split: str, source: DataSource) -> ImageSet:
    return _ood_folder("lsun_resize", split, source)


def load_imagenet_resize(split: str, source: DataSource) -> ImageSet:
    return _ood_folder("imagenet_resize", split, source)


def load_lsun_fix(split: str, source: DataSource) -> ImageSet:
    return _ood_folder("lsun_fix", split, source)


def load_imagenet_fix(split: str, source: DataSource) -> ImageSet:
    return _ood_folder("imagenet_fix", split, source)


def _imagenet30_files(split: str, source: DataSource) -> tuple[list[Path], list[int], list[str]]:
    root = _find_folder("imagenet30", source)
    split_dir = root / ("one_class_train" if split == "train" else "one_class_test")
    if not split_dir.is_dir():
        raise DataMissingError("imagenet30", f"imagenet30: {split_dir} not found")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    paths, labels = [], []
    for label, cls in enumerate(classes):
        found = _images_under(split_dir / cls)
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise DataMissingError("imagenet30", f"imagenet30: no images under {split_dir}")
    return paths, labels, classes


def load_imagenet30(split: str, source: DataSource) -> ImageSet:
    """ImageNet-30: class sub-folders under one_class_train / one_class_test."""
    paths, labels, classes = _imagenet30_files(split, source)
    images = _decode("imagenet30", paths, FOLDER_SETS["imagenet30"][1])
    return ImageSet(images, torch.tensor(labels, dtype=torch.int64), tuple(classes), "imagenet30")


def _ood_paths(name: str, source: DataSource) -> list[Path]:
    folder = _find_folder(name, source)
    paths = _images_under(folder)
    if not paths:
        raise DataMissingError(name, f"{name}: no images under {folder}")
    return paths


def probe(name: str, split: str, source: DataSource) -> None:
    """The folder is there, holds images, and every image file opens (headers only)."""
    if name == "imagenet30":
        paths = _imagenet30_files(split, source)[0]
    else:
        paths = _ood_paths(name, source)
    _check_headers(name, paths)
