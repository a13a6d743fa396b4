import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.datasets import DataSource, ImageSet, convert_images, load_dataset
from bench.datasets.embedded import digits_split
from bench.datasets.generated import make_gaussian, make_interp, make_uniform
from bench.datasets.torchvision_sets import DEBIAN_FASHION_MNIST
from bench.errors import ChecksumError, DataMissingError
from bench.protocols import load_ood_set


def test_digits_split_is_fixed_stratified_and_disjoint():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape == (1078, 1, 16, 16) and test.images.shape == (719, 1, 16, 16)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    tr_idx, te_idx = digits_split()
    assert len(set(tr_idx) & set(te_idx)) == 0 and len(tr_idx) + len(te_idx) == 1797
    counts = np.bincount(train.labels.numpy())
    totals = counts + np.bincount(test.labels.numpy())
    assert np.all(np.abs(counts - 0.6 * totals) <= 1)  # stratified: 60% of every class
    assert load_dataset("digits32", "test").images.shape[2:] == (32, 32)


def test_synthetic_set():
    s = load_dataset("synthetic", "train")
    assert s.images.shape == (192, 3, 16, 16) and len(s.classes) == 4


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package(tmp_path):
    train = load_dataset("fashion-mnist", "train", tmp_path, download=False)
    test = load_dataset("fashion-mnist", "test", tmp_path, download=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(train.labels.numpy()).tolist() == [6000] * 10
    assert train.classes[0] == "T-shirt/top"


@pytest.mark.parametrize("name,where", [
    ("cifar10", "cifar-10-python.tar.gz"), ("cifar100", "cifar-100-python.tar.gz"),
    ("mnist", "MNIST/raw"), ("svhn", "test_32x32.mat"), ("lsun_fix", "LSUN_fix"),
    ("imagenet30", "ImageNet30"),
])
def test_missing_data_says_where_to_put_it(tmp_path, name, where):
    with pytest.raises(DataMissingError) as info:
        load_dataset(name, "test", tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message and name in message and where in message
    assert str(tmp_path) in message


def _fake_fashion(tmp_path: Path) -> Path:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    return raw


def test_corrupt_idx_file_fails_with_a_checksum_message(tmp_path):
    raw = _fake_fashion(tmp_path)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(raw / name, "wb") as f:
            f.write(b"\x00\x00\x08\x01" + b"\x00\x00\x00\x02" + b"\x01\x02")
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        load_dataset("fashion-mnist", "test", tmp_path, download=False)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(), reason="dataset-fashion-mnist not installed")
def test_truncated_archive_fails_with_a_clear_message(tmp_path):
    raw = _fake_fashion(tmp_path)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(DEBIAN_FASHION_MNIST / name, raw / name)
    data = (raw / "t10k-images-idx3-ubyte.gz").read_bytes()
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ChecksumError, match="corrupt or truncated"):
        load_dataset("fashion-mnist", "test", tmp_path, download=False)


def test_corrupt_cifar_batch_fails_with_a_checksum_message(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta"]:
        (root / name).write_bytes(b"not a pickle")
    with pytest.raises(ChecksumError, match="checksum mismatch for .*test_batch"):
        load_dataset("cifar10", "test", tmp_path, download=False)


def test_folder_set_loads_and_converts(tmp_path):
    from PIL import Image

    folder = tmp_path / "LSUN_resize" / "inner"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    ood = load_dataset("lsun_resize", "test", tmp_path, download=False)
    assert ood.images.shape == (5, 3, 32, 32)
    reference = load_dataset("digits", "test")
    converted = load_ood_set("lsun_resize", reference, tmp_path, False)
    assert converted.images.shape == (5, 1, 16, 16)


def test_convert_images():
    x = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    rgb = convert_images(x, 3, (16, 16))
    assert rgb.shape == (3, 3, 16, 16) and rgb.dtype == torch.uint8
    back = convert_images(rgb, 1, (16, 16))
    assert torch.allclose(back.float(), rgb[:, :1].float(), atol=1)


def test_generated_sets_are_seeded_and_shaped():
    ref = ImageSet(torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8),
                   torch.zeros(50, dtype=torch.int64), ("a",), "ref")
    a, b = make_interp(ref), make_interp(ref)
    assert torch.equal(a.images, b.images) and a.images.shape == ref.images.shape
    # every interp image is the average of two distinct reference images
    first = a.images[0].float()
    pair_means = (ref.images.float()[:, None] + ref.images.float()[None]) / 2
    close = (pair_means - first).abs().flatten(2).max(2).values <= 0.5
    i, j = torch.nonzero(close)[0]
    assert i != j
    g, u = make_gaussian(ref), make_uniform(ref)
    assert g.images.shape == u.images.shape == ref.images.shape
    assert abs(g.images.float().mean().item() - 127.5) < 5
    assert u.images.min() < 10 and u.images.max() > 245
    assert not torch.equal(a.images, make_interp(ref, seed=1).images)


def test_data_source_is_frozen():
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        DataSource(Path("."), True).download = False
