"""Data sets that need no files: scikit-learn's digits and a synthetic set for tests."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.datasets import DataSource, ImageSet

DIGIT_CLASSES = tuple(str(d) for d in range(10))
DIGITS_TEST_FRACTION = 0.4  # fixed stratified split, seed 0: 1,078 train / 719 test images
SYNTHETIC_CLASSES = ("stripes-h", "stripes-v", "checker", "blob")


def digits_split() -> tuple[np.ndarray, np.ndarray]:
    """Indices (into scikit-learn's 1,797 digits) of the fixed train and test splits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    train_idx, test_idx = train_test_split(
        np.arange(len(target)), test_size=DIGITS_TEST_FRACTION, stratify=target, random_state=0)
    return np.sort(train_idx), np.sort(test_idx)


def _digits(split: str, size: int) -> ImageSet:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = digits_split()
    idx = torch.from_numpy(train_idx if split == "train" else test_idx)
    name = "digits" if size == 16 else f"digits{size}"
    return ImageSet(images[idx].contiguous(), labels[idx], DIGIT_CLASSES, name)


def load_digits16(split: str, source: DataSource) -> ImageSet:
    """scikit-learn's 1,797 8x8 digits upsampled to 16 px, fixed stratified 60/40 split."""
    return _digits(split, 16)


def load_digits32(split: str, source: DataSource) -> ImageSet:
    """The digits upsampled to 32 px (CIFAR-sized input for the paper backbones)."""
    return _digits(split, 32)


def load_synthetic(split: str, source: DataSource) -> ImageSet:
    """Four classes of 16 px RGB patterns with noise: 48 train / 24 test images each.

    Patterns are orientation-sensitive (horizontal vs vertical stripes, an off-centre blob), so
    rotation-based methods can learn from them, and classes are separable.
    """
    per_class = 48 if split == "train" else 24
    rng = np.random.default_rng(0 if split == "train" else 1)
    size = 16
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images, labels = [], []
    for label in range(len(SYNTHETIC_CLASSES)):
        for _ in range(per_class):
            phase = rng.uniform(0, 2 * np.pi)
            freq = rng.uniform(0.7, 1.0)
            if label == 0:
                base = 0.5 + 0.5 * np.sin(freq * yy + phase)
            elif label == 1:
                base = 0.5 + 0.5 * np.sin(freq * xx + phase)
            elif label == 2:
                base = 0.5 + 0.5 * np.sin(freq * xx + phase) * np.sin(freq * yy + phase)
            else:
                cy, cx = rng.uniform(2, 6), rng.uniform(2, 6)  # blob near the top-left corner
                base = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
            colour = rng.uniform(0.4, 1.0, size=3).astype(np.float32)
            img = base[None] * colour[:, None, None] + rng.normal(0, 0.08, (3, size, size))
            images.append(np.clip(img * 255, 0, 255).astype(np.uint8))
            labels.append(label)
    return ImageSet(
        torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64),
        SYNTHETIC_CLASSES, "synthetic",
    )
