"""Rotation prediction (Golan & El-Yaniv 2018; Hendrycks et al. 2019): a 4-way rotation classifier."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.datasets import ImageSet
from bench.methods.base import to_numpy
from bench.methods.network import ClassifierConfig, NetworkDetector
from bench.nn.augment import ROT_VIEW, random_hflip, to_float
from bench.nn.backbones import Network
from bench.nn.shifts import N_SHIFTS, all_rotations, rotate


@dataclass(frozen=True)
class RotNetConfig(ClassifierConfig):
    epochs: int = 100


class RotNet(NetworkDetector):
    """Rotation prediction; score rot = - sum_k log p(k | x rotated by k)."""

    Config = RotNetConfig
    scores = ("rot",)

    def build_model(self, train: ImageSet) -> Network:
        return self.network(train, n_shifts=N_SHIFTS)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shifted, shift_labels = all_rotations(random_hflip(to_float(x)))  # flip, then rotate
        logits = self.model_(self.input(ROT_VIEW(shifted)))["shift_logits"]
        return F.cross_entropy(logits.float(), shift_labels)

    def method_scores(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        total = torch.zeros(images.shape[0], dtype=torch.float64, device=self.ctx_.device)
        for k in range(N_SHIFTS):
            out = self.forward(images, lambda u8, k=k: rotate(to_float(u8), k), ("shift_logits",))
            total += F.log_softmax(out["shift_logits"], dim=1)[:, k].double()
        return {"rot": -to_numpy(total)}
