"""Mean-Shifted Contrastive loss (Reiss & Hoshen, AAAI 2023): an ImageNet-pretrained ResNet
fine-tuned with a contrastive loss on features shifted by the normal images' normalised mean,
plus the angular centre loss, scored by the k-NN distance to the training features (official
code: github.com/talreiss/Mean-Shifted-Anomaly-Detection, `main.py --angular`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.config import param
from bench.methods.pretrained import FineTuneConfig, FineTunedDetector
from bench.nn.augment import ViewAugment, gaussian_blur, to_float
from bench.nn.losses import mean_shifted_contrastive_loss

# the code's MoCo views: crop area 0.2-1, jitter p 0.8, grey p 0.2, flip; resized to the
# network's crop, then blurred (p 0.5, sigma 0.1-2 pixels at that resolution)
MOCO_VIEW = ViewAugment(crop_scale=(0.2, 1.0))
BLUR_SIGMA = (0.1, 2.0)  # pixels at the network's resolution


@dataclass(frozen=True)
class MSCConfig(FineTuneConfig):
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-5
    momentum: float = 0.0  # the code's SGD has none
    temperature: float = param(0.25, "temperature of the contrastive loss", gt=0)
    angular: bool = param(True, "add the angular centre loss (the code's --angular)")
    blur_p: float = param(0.5, "probability of the views' Gaussian blur", ge=0, le=1)


class MSC(FineTunedDetector):
    """MSC: mean-shifted contrastive fine-tuning of pretrained features; score knn (k = 2)."""

    Config = MSCConfig
    normalise_features = True  # the code's network returns F.normalize(features)

    @classmethod
    def official_frozen(cls, arch: str) -> tuple[str, ...]:
        """The code's `freeze_parameters(model, backbone)`: conv1, bn1, layer1 and layer2 of a
        ResNet-152, nothing of a ResNet-18 (its other choice)."""
        return cls.OFFICIAL_FROZEN if arch == "resnet152" else ()

    def initial_center(self, images: torch.Tensor) -> torch.Tensor:
        """The mean unit feature, itself normalised with the angular loss (as the code)."""
        center = super().initial_center(images)
        return F.normalize(center, dim=0) if self.config.angular else center

    def view(self, x: torch.Tensor) -> torch.Tensor:
        v = self.model_.prepare(MOCO_VIEW(x), centre_crop=False)
        sigma = torch.empty(v.shape[0], device=v.device).uniform_(*BLUR_SIGMA)
        blurred = gaussian_blur(v, sigma, max_sigma=BLUR_SIGMA[1])
        keep = torch.rand(v.shape[0], device=v.device) < self.config.blur_p
        return torch.where(keep.view(-1, 1, 1, 1), blurred, v)

    def training_loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = to_float(x)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        f1, f2 = self.embed_batch(self.view(x)), self.embed_batch(self.view(x))
        return mean_shifted_contrastive_loss(f1, f2, self.model_.center,
                                             temperature=self.config.temperature,
                                             angular=self.config.angular)
