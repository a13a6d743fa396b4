"""PANDA (Reiss, Cohen, Bergman & Hoshen, CVPR 2021), its early-stopping variant: an
ImageNet-pretrained ResNet fine-tuned on the normal images to pull their features towards the
initial mean (compactness loss, no Fisher-matrix file), scored by the k-NN distance to the
training features (official code: github.com/talreiss/PANDA, `panda.py` without --ewc)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods.pretrained import FineTuneConfig, FineTunedDetector
from bench.nn.augment import to_float
from bench.nn.losses import compactness_loss


@dataclass(frozen=True)
class PANDAConfig(FineTuneConfig):
    pass  # the code's defaults: ResNet-152, 15 epochs, SGD lr 1e-2, momentum 0.9, batch 32


class PANDA(FineTunedDetector):
    """PANDA: compactness fine-tuning of pretrained features; score knn (k = 2)."""

    Config = PANDAConfig
    clip_grad_norm = 1e-3  # the code: clip_grad_norm_(model.parameters(), 1e-3)

    def training_loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return compactness_loss(self.embed_batch(to_float(x)), self.model_.center)
