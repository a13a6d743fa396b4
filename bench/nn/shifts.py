"""The four rotation shifts (0, 90, 180, 270 degrees, counter-clockwise) shared by CSI, MCL, Rot."""

from __future__ import annotations

import torch

N_SHIFTS = 4


def rotate(images: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate a batch N x C x H x W by k * 90 degrees."""
    return torch.rot90(images, k, dims=(2, 3))


def all_rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 rotations of every image, rotation-major: [x, rot90 x, rot180 x, rot270 x].

    Returns (4N images, int64 shift labels of length 4N).
    """
    n = images.shape[0]
    shifted = torch.cat([rotate(images, k) for k in range(N_SHIFTS)])
    labels = torch.arange(N_SHIFTS, device=images.device).repeat_interleave(n)
    return shifted, labels


def rotate_blocks(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """4N images in rotation-major blocks (e.g. 4 copies, each flipped on its own) with block k
    rotated by k: the layout and labels of `all_rotations`."""
    n = images.shape[0] // N_SHIFTS
    shifted = torch.cat([rotate(block, k) for k, block in enumerate(images.split(n))])
    labels = torch.arange(N_SHIFTS, device=images.device).repeat_interleave(n)
    return shifted, labels


def rotate_each(images: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate image i by k[i] * 90 degrees (k int64 of length N); images must be square."""
    out = images.clone()
    for shift in range(1, N_SHIFTS):
        mask = k == shift
        out = torch.where(mask.view(-1, 1, 1, 1), rotate(images, shift), out)
    return out
