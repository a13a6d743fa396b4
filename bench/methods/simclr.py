"""SimCLR (Chen et al. 2020) as a detector: NT-Xent on two views; CSI's cosine-times-norm score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.datasets import ImageSet
from bench.methods.base import to_numpy
from bench.methods.ssl_base import SSLConfig, SSLDetector
from bench.nn.augment import SIMCLR_VIEW, to_float
from bench.nn.backbones import ContrastiveNet
from bench.nn.losses import nt_xent
from bench.nn.scoring import max_cosine_times_norm
from bench.nn.train import as_input


@dataclass(frozen=True)
class SimCLRConfig(SSLConfig):
    temperature: float = 0.5


class SimCLR(SSLDetector):
    """SimCLR: NT-Xent over 2B views; score knn = max cosine to the training bank x norm."""

    Config = SimCLRConfig

    def build_model(self, train: ImageSet) -> ContrastiveNet:
        c = self.config
        return ContrastiveNet(c.backbone, train.shape[0], c.proj_hidden, c.proj_dim)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = to_float(x)
        views = torch.cat([SIMCLR_VIEW(x), SIMCLR_VIEW(x)])
        z1, z2 = self.model_(as_input(views))["z"].chunk(2)
        return nt_xent(z1, z2, self.config.temperature)

    def after_fit(self, train: ImageSet) -> None:
        z = self.ctx_.cached("simclr-bank", train.images,
                            lambda: {"z": self.forward(train.images, to_float)["z"]})["z"]
        self.bank_ = F.normalize(z.to(self.ctx_.device), dim=1)

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        z = self.forward(images, to_float)["z"]
        return {"knn": -to_numpy(max_cosine_times_norm(z, self.bank_))}
