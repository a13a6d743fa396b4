"""MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN from their official files, checksummed.

Files are read with our own readers (IDX, CIFAR pickles, SVHN .mat) so that every file is verified
against its published MD5 before use; downloads go through torchvision's download helpers, which
check the same sums. Layout under the data dir is torchvision's, so an existing torchvision cache
can be reused by pointing ``--data-dir`` at it.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch

from bench.datasets import DataSource, ImageSet
from bench.errors import BenchError, ChecksumError, DataMissingError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
_DEBIAN_HINT = {"fashion-mnist": " (or install the Debian package dataset-fashion-mnist)"}

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")

# name -> (torchvision folder, mirrors, {file: md5 of the .gz}, {file: md5 of the IDX payload})
# The payload sums accept archives recompressed by a packager (Debian's dataset-fashion-mnist).
_IDX_SETS = {
    "mnist": (
        "MNIST",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        {},
    ),
    "fashion-mnist": (
        "FashionMNIST",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        {
            "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
        },
    ),
}

_CIFAR = {
    "cifar10": dict(
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        tgz_md5="c58f30108f718f92721af3b95e74349a",
        train=[("data_batch_1", "c99cafc152244af753f735de768cd75f"),
               ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
               ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
               ("data_batch_4", "634d18415352ddfa80567beed471001a"),
               ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")],
        test=[("test_batch", "40351d587109b95175f43aff81a1287e")],
        meta=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
    ),
    "cifar100": dict(
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        tgz_md5="eb9058c3a382ffc7106e4002c42a8d85",
        train=[("train", "16019d7e3df5f24257cddd939b257f8d")],
        test=[("test", "f0ef6b0ae62326f3e7ffdfab6717acfc")],
        meta=("meta", "7973b15100ade9c7d40fb424638fde48"),
    ),
}

_SVHN = {
    "train": ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat", "train_32x32.mat",
              "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat", "test_32x32.mat",
             "eb5a983be6a315427106f1b164d9cef3"),
}


def md5_of(path: Path) -> str:
    from bench.files import file_digest

    return file_digest(path, "md5")


def _verify(name: str, path: Path, expected: str) -> None:
    got = md5_of(path)
    if got != expected:
        raise ChecksumError(
            f"{name}: checksum mismatch for {path} (md5 {got}, expected {expected}); the file is "
            "corrupt or truncated: delete it and run again with --download"
        )


def _download(name: str, where: str, fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # network errors come in many types; report one line
        raise BenchError(f"{name}: download failed ({type(exc).__name__}: {exc}); without "
                         f"internet, {where}") from None


# --- IDX (MNIST, Fashion-MNIST) -------------------------------------------------------------

def _check_idx_sum(name: str, path: Path, gz_md5: str, payload_md5: str | None) -> bytes:
    """The decompressed payload of an IDX .gz file whose archive or payload MD5 matches."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ChecksumError(
            f"{name}: {path} is corrupt or truncated ({exc}); delete it and run again with --download"
        ) from None
    if md5_of(path) != gz_md5 and hashlib.md5(data).hexdigest() != payload_md5:
        raise ChecksumError(
            f"{name}: checksum mismatch for {path} (expected md5 {gz_md5} of the archive"
            + (f" or {payload_md5} of its contents" if payload_md5 else "")
            + "); delete it and run again with --download"
        )
    return data


def _read_idx(name: str, path: Path, gz_md5: str, payload_md5: str | None) -> np.ndarray:
    data = _check_idx_sum(name, path, gz_md5, payload_md5)
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx_files(name: str, split: str, source: DataSource) -> tuple[Path, list[str]]:
    """The folder holding the split's two IDX files (downloaded there if missing and allowed)."""
    folder, mirrors, gz_sums, _ = _IDX_SETS[name]
    prefix = "train" if split == "train" else "t10k"
    files = [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"]
    raw = source.data_dir / folder / "raw"
    candidates = [raw] + ([DEBIAN_FASHION_MNIST] if name == "fashion-mnist" else [])
    found = next((d for d in candidates if all((d / f).exists() for f in files)), None)
    if found is None:
        if not source.download:
            raise DataMissingError(
                name, missing=f"{', '.join(files)} not found under {raw}",
                fix="put the files there" + _DEBIAN_HINT.get(name, ""), downloadable=True)
        from torchvision.datasets.utils import download_url

        for f in files:
            if (raw / f).exists():
                continue
            errors = []
            for mirror in mirrors:
                try:
                    download_url(mirror + f, str(raw), filename=f, md5=gz_sums[f])
                    break
                except Exception as exc:
                    errors.append(f"{mirror}: {exc}")
            else:
                raise BenchError(f"{name}: download of {f} failed ({'; '.join(errors)}); "
                                 f"without internet, put {', '.join(files)} in {raw}"
                                 + _DEBIAN_HINT.get(name, ""))
        found = raw
    return found, files


def _idx_set(name: str, split: str, source: DataSource, classes: tuple[str, ...]) -> ImageSet:
    _, _, gz_sums, payload_sums = _IDX_SETS[name]
    found, files = _idx_files(name, split, source)
    images = _read_idx(name, found / files[0], gz_sums[files[0]], payload_sums.get(files[0]))
    labels = _read_idx(name, found / files[1], gz_sums[files[1]], payload_sums.get(files[1]))
    return ImageSet(
        torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
        classes, name,
    )


def load_mnist(split: str, source: DataSource) -> ImageSet:
    return _idx_set("mnist", split, source, tuple(str(d) for d in range(10)))


def load_fashion_mnist(split: str, source: DataSource) -> ImageSet:
    return _idx_set("fashion-mnist", split, source, FASHION_CLASSES)


# --- CIFAR ----------------------------------------------------------------------------------

def _cifar_files(family: str, source: DataSource, name: str = "") -> tuple[Path, dict]:
    """The folder and file table of CIFAR-10 or -100 (`family`), downloaded if allowed; errors
    name the data set asked for (`name`: cifar100-fine reads cifar100's files)."""
    name = name or family
    spec = _CIFAR[family]
    root = source.data_dir / spec["folder"]
    needed = spec["train"] + spec["test"] + [spec["meta"]]
    if not all((root / f).exists() for f, _ in needed):
        if not source.download:
            raise DataMissingError(
                name, missing=f"not found at {root}",
                fix=f"extract {spec['url'].rsplit('/', 1)[1]} ({spec['url']}) into "
                    f"{source.data_dir}", downloadable=True)
        from torchvision.datasets.utils import download_and_extract_archive

        _download(name, f"extract {spec['url'].rsplit('/', 1)[1]} ({spec['url']}) into "
                  f"{source.data_dir}", download_and_extract_archive, spec["url"],
                  str(source.data_dir), md5=spec["tgz_md5"])
    return root, spec


def _unpickle(name: str, path: Path, md5: str) -> dict:
    _verify(name, path, md5)
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _cifar(name: str, split: str, source: DataSource, coarse: bool) -> ImageSet:
    family = "cifar10" if name == "cifar10" else "cifar100"
    root, spec = _cifar_files(family, source, name)
    entries = [_unpickle(name, root / f, md5) for f, md5 in spec[split]]
    meta = _unpickle(name, root / spec["meta"][0], spec["meta"][1])
    data = np.concatenate([e["data"] for e in entries]).reshape(-1, 3, 32, 32)
    if family == "cifar10":
        key, names = "labels", meta["label_names"]
    elif coarse:
        key, names = "coarse_labels", meta["coarse_label_names"]
    else:
        key, names = "fine_labels", meta["fine_label_names"]
    labels = np.concatenate([np.asarray(e[key]) for e in entries]).astype(np.int64)
    return ImageSet(torch.from_numpy(data.copy()), torch.from_numpy(labels), tuple(names), name)


def load_cifar10(split: str, source: DataSource) -> ImageSet:
    return _cifar("cifar10", split, source, coarse=False)


def load_cifar100(split: str, source: DataSource) -> ImageSet:
    """CIFAR-100 with the 20 official coarse labels (super-classes)."""
    return _cifar("cifar100", split, source, coarse=True)


def load_cifar100_fine(split: str, source: DataSource) -> ImageSet:
    return _cifar("cifar100-fine", split, source, coarse=False)


# --- SVHN -----------------------------------------------------------------------------------

def _svhn_file(split: str, source: DataSource) -> Path:
    url, filename, md5 = _SVHN[split]
    root = source.data_dir / "svhn"
    path = root / filename
    if not path.exists():
        if not source.download:
            raise DataMissingError(
                "svhn", missing=f"{path} not found", fix=f"put {filename} ({url}) there",
                downloadable=True)
        from torchvision.datasets.utils import download_url

        _download("svhn", f"put {filename} ({url}) in {root}", download_url, url, str(root),
                  filename=filename, md5=md5)
    _verify("svhn", path, md5)
    return path


def load_svhn(split: str, source: DataSource) -> ImageSet:
    path = _svhn_file(split, source)
    from scipy.io import loadmat

    mat = loadmat(str(path))
    images = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)))
    labels = mat["y"].astype(np.int64).ravel() % 10  # the .mat stores digit 0 as label 10
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels),
                    tuple(str(d) for d in range(10)), "svhn")


# --- probes: files present and intact, nothing decoded ----------------------------------------

def probe(name: str, split: str, source: DataSource) -> None:
    """Check (and, if allowed, download) the files of `split` and their MD5 sums."""
    if name in _IDX_SETS:
        _, _, gz_sums, payload_sums = _IDX_SETS[name]
        found, files = _idx_files(name, split, source)
        for f in files:
            _check_idx_sum(name, found / f, gz_sums[f], payload_sums.get(f))
    elif name == "svhn":
        _svhn_file(split, source)
    else:
        family = "cifar10" if name == "cifar10" else "cifar100"
        root, spec = _cifar_files(family, source, name)
        for f, md5 in spec[split] + [spec["meta"]]:
            _verify(name, root / f, md5)
