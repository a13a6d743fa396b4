"""SimCLR (Chen et al. 2020) as a detector: NT-Xent on two views; CSI's cosine-times-norm score
and the cosine alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from bench.datasets import ImageSet
from bench.methods.base import to_numpy
from bench.methods.network import ContrastiveConfig, EnsembleScoreConfig, NetworkDetector
from bench.nn.augment import SIMCLR_VIEW, ViewAugment, to_float
from bench.nn.backbones import InputNorm
from bench.nn.losses import nt_xent
from bench.nn.scoring import max_cosine, max_cosine_times_norm


@dataclass(frozen=True)
class SimCLRConfig(ContrastiveConfig, EnsembleScoreConfig):
    # CSI's code, which trains its SimCLR baseline: its NormalizeLayer, colour jitter and loader
    input_norm: InputNorm = "csi"
    color_jitter: Literal["torchvision", "csi"] = "csi"
    drop_last: bool = False


class SimCLR(NetworkDetector):
    """SimCLR: NT-Xent over 2B views; scores cosnorm (CSI's max cosine x norm) and cos."""

    Config = SimCLRConfig
    scores = ("cosnorm", "cos")

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = to_float(x)
        view = self.view(SIMCLR_VIEW)
        views = torch.cat([view(x), view(x)])
        z1, z2 = self.model_(self.input(views))["z"].chunk(2)
        return nt_xent(z1, z2, temperature=self.config.temperature)

    def mean_projection(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised projection averaged over T augmented samples of each image [N, d].

        CSI's `--ood_score simclr` (its code: `--ood_samples 10 --resize_factor 0.54
        --resize_fix`): crops of fixed area with colour jitter, no flip, no rotation. The norm of
        this mean is large where the views agree, which is what makes the norm a normality cue.
        """
        c = self.config
        view = self.view(ViewAugment(crop_scale=(c.test_crop_area, c.test_crop_area), flip_p=0.0))
        return self.ensemble_mean(c.ens_samples,
                                  lambda: self.forward(images, lambda u8: view(to_float(u8))))["z"]

    def after_fit(self, train: ImageSet) -> None:
        tag = f"simclr-train-T{self.config.ens_samples}-a{self.config.test_crop_area}"
        z = self.ctx_.cached(tag, train.images,
                             lambda: {"z": self.mean_projection(train.images)})["z"]
        self.bank_ = F.normalize(z.to(self.ctx_.device), dim=1)

    def method_scores(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """cosnorm: CSI's score, max cosine to the bank x the norm; cos: the max cosine alone
        (what the network learned, without the norm factor: docs/methods.md)."""
        z = self.mean_projection(images)
        return {"cosnorm": -to_numpy(max_cosine_times_norm(z, self.bank_)),
                "cos": -to_numpy(max_cosine(z, self.bank_))}
