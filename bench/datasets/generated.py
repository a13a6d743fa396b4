"""OOD sets generated from the in-distribution test split: Interp. and noise images."""

from __future__ import annotations

import torch

from bench.datasets import ImageSet

GENERATED_SEED = 0  # fixed, so every method sees the same OOD images


def make_interp(reference: ImageSet, seed: int = GENERATED_SEED) -> ImageSet:
    """Pixel average of random pairs of distinct in-distribution test images (CSI's Interp.)."""
    g = torch.Generator().manual_seed(seed)
    n = len(reference)
    first = torch.randperm(n, generator=g)
    shift = torch.randint(1, n, (n,), generator=g)
    second = (first + shift) % n  # never pairs an image with itself
    mixed = (reference.images[first].float() + reference.images[second].float()) / 2
    return _ood(mixed.round().to(torch.uint8), "interp")


def make_gaussian(reference: ImageSet, seed: int = GENERATED_SEED) -> ImageSet:
    """Gaussian noise images, pixels ~ N(0.5, 0.25^2) clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(reference.images.shape, generator=g) * 0.25 + 0.5
    return _ood((x.clamp(0, 1) * 255).round().to(torch.uint8), "gaussian")


def make_uniform(reference: ImageSet, seed: int = GENERATED_SEED) -> ImageSet:
    """Uniform noise images, pixels ~ U[0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, reference.images.shape, generator=g, dtype=torch.int64)
    return _ood(x.to(torch.uint8), "uniform")


def _ood(images: torch.Tensor, name: str) -> ImageSet:
    return ImageSet(images, torch.zeros(images.shape[0], dtype=torch.int64), ("ood",), name)
