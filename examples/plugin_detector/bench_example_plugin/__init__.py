"""Two detectors of one's own, written against mcl-bench's public API only.

- `MeanDistance`: a PyOD-style detector (fit / score), the distance of an image to the mean
  training image.
- `TinyRotation`: a network method that writes only its training loss (rotation prediction on
  a rotation head); it inherits the engine (precision, checkpoints, resume) and every post-hoc
  score of its features (deep-knn, mahalanobis; rmds with labels).

Without installing, from examples/plugin_detector (the current folder is on the import path):
``bench run --methods bench_example_plugin:MeanDistance``; installed (``pip install -e
examples/plugin_detector``): ``bench run --methods mean-distance`` from anywhere, and in Python
``bench.run(methods=[MeanDistance])``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import bench


@dataclass(frozen=True)
class MeanDistanceConfig(bench.Config):
    power: float = bench.param(2.0, "exponent of the per-pixel distance to the mean image",
                               gt=0, le=8)


class MeanDistance(bench.Detector):
    """Distance of each image to the mean training image (an example plugin)."""

    Config = MeanDistanceConfig
    scores = ("distance",)

    def fit(self, train: bench.ImageSet, ctx: bench.FitContext) -> MeanDistance:
        self.mean_ = train.images.float().mean(0)
        return self

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        gap = (images.float() - self.mean_).abs().pow(self.config.power)
        return {"distance": gap.flatten(1).sum(1).double().numpy()}


@dataclass(frozen=True)
class TinyRotationConfig(bench.NetworkConfig):
    """The engine's fields (backbone, optimiser, schedule, checkpoints) and nothing else."""


class TinyRotation(bench.NetworkDetector):
    """Rotation prediction written as a plugin: only the network's heads and the loss."""

    Config = TinyRotationConfig

    def build_model(self, train: bench.ImageSet):
        return self.network(train, n_shifts=4)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255
        k = torch.randint(0, 4, (x.shape[0],), device=x.device)
        rotated = torch.stack([torch.rot90(img, int(r), dims=(1, 2)) for img, r in zip(x, k)])
        logits = self.model_(self.input(rotated))["shift_logits"]
        return F.cross_entropy(logits.float(), k)
