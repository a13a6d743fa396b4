"""In-memory image sets: every protocol data set fits in memory as uint8 N x C x H x W."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.errors import BenchError


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images (uint8 N x C x H x W), int64 labels, class names, and the set's name."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"{self.name}: images must be uint8 N x C x H x W")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.name}: labels must be int64 of length N")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, index: torch.Tensor, name: str | None = None) -> ImageSet:
        """The images selected by a boolean mask or an index tensor."""
        return ImageSet(self.images[index], self.labels[index], self.classes, name or self.name)


@dataclass(frozen=True)
class DataSource:
    """Where data sets live and whether they may be downloaded."""

    data_dir: Path
    download: bool = True


def _expand(text: str, what: str) -> Path:
    """`text` as a path with ``~`` expanded; a BenchError for ``~nosuchuser`` or a name too long."""
    from bench.files import check_path

    try:
        path = Path(text).expanduser()
    except RuntimeError:
        raise BenchError(f"{what} {text!r}: no such user's home folder to expand ~ in") from None
    check_path(path, what)
    return path


def default_data_dir() -> Path:
    """``$BENCH_DATA``, else a per-user cache folder (``$XDG_CACHE_HOME/mcl-bench/data``)."""
    if os.environ.get("BENCH_DATA"):
        return _expand(os.environ["BENCH_DATA"], "$BENCH_DATA")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "mcl-bench" / "data"


@lru_cache(maxsize=16)
def _load_cached(name: str, split: str, data_dir: str, download: bool) -> ImageSet:
    from bench.registry import DATASETS

    loader = DATASETS.load_object(name)
    return loader(split, DataSource(Path(data_dir), download))


def _check_split(name: str, split: str):
    from bench.registry import DATASETS

    entry = DATASETS.entry(name)
    if split not in ("train", "test"):
        raise BenchError(f"unknown split {split!r} (train or test)")
    if entry.kind == "generated":
        raise BenchError(f"{name} is generated from an in-distribution test split; "
                         "it has no splits of its own")
    if split == "train" and not entry.trainable:
        raise BenchError(f"{name} is an OOD test set; it has no train split")
    return entry


def _directory(data_dir: Path | str | None) -> Path:
    return _expand(str(data_dir), "--data-dir") if data_dir else default_data_dir()


def load_dataset(
    name: str, split: str, data_dir: Path | str | None = None, download: bool = True
) -> ImageSet:
    """Load split ``train`` or ``test`` of a registered data set (cached per process)."""
    _check_split(name, split)
    return _load_cached(name, split, str(_directory(data_dir)), download)


def probe_dataset(name: str, split: str, data_dir: Path | str | None = None,
                  download: bool = True) -> None:
    """Check that a data set's files are there and intact (downloading them if allowed) without
    decoding its images: DataMissingError (with where the files go) or ChecksumError if not."""
    entry = _check_split(name, split)
    entry.check_files(name, split, DataSource(_directory(data_dir), download))


def convert_images(images: torch.Tensor, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """uint8 images converted to `channels` (1 or 3) and resized to `size` (H, W)."""
    x = images
    if x.shape[1] != channels:
        if channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif channels == 1 and x.shape[1] == 3:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise ValueError(f"cannot convert {x.shape[1]} channels to {channels}")
    if tuple(x.shape[2:]) != tuple(size):
        chunks = []
        for part in x.split(2048):
            y = F.interpolate(part.float(), size=size, mode="bilinear", antialias=True,
                              align_corners=False)
            chunks.append(y.round().clamp(0, 255).to(torch.uint8))
        x = torch.cat(chunks)
    return x.contiguous()
