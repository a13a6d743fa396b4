"""CSI (Tack et al., NeurIPS 2020): contrasting shifted instances + shift classification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import param
from bench.datasets import ImageSet
from bench.methods.base import to_numpy
from bench.methods.network import ContrastiveConfig, EnsembleScoreConfig, NetworkDetector
from bench.nn.augment import SHIFTED_VIEW, ViewAugment, random_hflip, to_float
from bench.nn.backbones import InputNorm, Network
from bench.nn.losses import nt_xent
from bench.nn.scoring import csi_scores
from bench.nn.shifts import N_SHIFTS, all_rotations, rotate


@dataclass(frozen=True)
class CSIConfig(ContrastiveConfig, EnsembleScoreConfig):
    input_norm: InputNorm = "csi"  # CSI's code: NormalizeLayer, its colour jitter, its loader
    color_jitter: Literal["torchvision", "csi"] = "csi"
    drop_last: bool = False
    shift_weight: float = param(1.0, "weight of the shift-classification loss", ge=0)


class CSI(NetworkDetector):
    """CSI: NT-Xent over 8B shifted views + 4-way shift CE; scores csi (CSI-ens) and sim."""

    Config = CSIConfig
    scores = ("csi", "sim")

    def build_model(self, train: ImageSet) -> Network:
        return self.network(train, n_shifts=N_SHIFTS)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        v1, v2 = random_hflip(to_float(x).repeat(2, 1, 1, 1)).chunk(2)  # flip, then rotate
        s1, shift = all_rotations(v1)
        s2, _ = all_rotations(v2)
        out = self.model_(self.input(self.view(SHIFTED_VIEW)(torch.cat([s1, s2]))))
        z1, z2 = out["z"].chunk(2)
        loss_sim = nt_xent(z1, z2, temperature=self.config.temperature)  # other rotations are negatives
        loss_shift = F.cross_entropy(out["shift_logits"].float(), torch.cat([shift, shift]))
        return loss_sim + self.config.shift_weight * loss_shift

    def ensemble_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per rotation k, the mean over T augmented samples of the unnormalised projection
        [K, N, d] and of the shift logits [K, N, K]. As CSI's `_get_features`: each batch is
        flipped and rotated K ways, and the K rotations go through one augmentation call (its
        colour-jitter order drawn once for them) and one forward pass."""
        c = self.config
        view = self.view(ViewAugment(crop_scale=(c.test_crop_area, c.test_crop_area), flip_p=0.0))

        def shifted(u8: torch.Tensor) -> torch.Tensor:
            x = to_float(u8)
            return view(torch.cat([rotate(random_hflip(x), k) for k in range(N_SHIFTS)]))

        def one_sample() -> dict[str, torch.Tensor]:
            out = self.forward(images, shifted, ("z", "shift_logits"))
            return {"z": self._by_rotation(out["z"], images.shape[0]),
                    "shift": self._by_rotation(out["shift_logits"], images.shape[0])}

        return self.ensemble_mean(c.ens_samples, one_sample)

    def _by_rotation(self, rows: torch.Tensor, n: int) -> torch.Tensor:
        """[K, N, ...] from the forward passes' rows, which come per batch as K blocks of its
        images (batches of `score_batch_size`)."""
        size = self.config.score_batch_size
        blocks = [part.unflatten(0, (N_SHIFTS, -1))
                  for part in rows.split([N_SHIFTS * min(size, n - s) for s in range(0, n, size)])]
        return torch.cat(blocks, 1)

    def after_fit(self, train: ImageSet) -> None:
        tag = f"csi-train-T{self.config.ens_samples}-a{self.config.test_crop_area}"
        feats = self.ctx_.cached(tag, train.images, lambda: self.ensemble_features(train.images))
        self.train_feats_ = {k: v.to(self.ctx_.device) for k, v in feats.items()}

    def method_scores(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        test = self.ensemble_features(images)
        full, sim = csi_scores(test["z"], test["shift"], self.train_feats_["z"],
                               self.train_feats_["shift"])
        return {"csi": -to_numpy(full), "sim": -to_numpy(sim)}
