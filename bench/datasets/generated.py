"""OOD sets generated from in-distribution images: Interp. and noise images (test sets, made from
the test split), and patch-shuffled images and smooth noise (validation sets, made from the
held-out training images of the `-val` protocols)."""

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


def make_patches(reference: ImageSet, seed: int = GENERATED_SEED, grid: int = 4) -> ImageSet:
    """Each image cut into a grid x grid of patches and the patches shuffled (one permutation per
    image): the local statistics of the data, none of its shapes. A validation outlier."""
    g = torch.Generator().manual_seed(seed)
    x = reference.images
    n, c, h, w = x.shape
    ph, pw = h // grid, w // grid
    x = x[:, :, :ph * grid, :pw * grid]
    tiles = x.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid,
                                                                               c, ph, pw)
    order = torch.argsort(torch.rand(n, grid * grid, generator=g), dim=1)
    tiles = tiles[torch.arange(n)[:, None], order]
    out = tiles.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(
        n, c, ph * grid, pw * grid)
    if (ph * grid, pw * grid) != (h, w):  # sizes that the grid does not divide keep their border
        full = reference.images.clone()
        full[:, :, :ph * grid, :pw * grid] = out
        out = full
    return _ood(out.contiguous(), "patches")


def make_smooth_noise(reference: ImageSet, seed: int = GENERATED_SEED) -> ImageSet:
    """Low-frequency noise: uniform noise on a grid a quarter of the image's side, upsampled
    bilinearly (blobs, unlike the pixel-wise noise of the test sets). A validation outlier."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed + 1)
    n, c, h, w = reference.images.shape
    coarse = torch.rand(n, c, max(2, h // 4), max(2, w // 4), generator=g)
    x = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return _ood((x.clamp(0, 1) * 255).round().to(torch.uint8), "smooth-noise")


def _ood(images: torch.Tensor, name: str) -> ImageSet:
    return ImageSet(images, torch.zeros(images.shape[0], dtype=torch.int64), ("ood",), name)
