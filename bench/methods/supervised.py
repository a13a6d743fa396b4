"""Labeled OOD baselines: a cross-entropy classifier (MSP, ODIN, Mahalanobis, energy), SupCLR and
supervised CSI with linear heads on the frozen encoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import param, score_field
from bench.datasets import ImageSet
from bench.methods.base import to_numpy
from bench.methods.network import ClassifierConfig, ContrastiveConfig, NetworkDetector
from bench.nn.augment import CLASSIFIER_VIEW, SHIFTED_VIEW, SIMCLR_VIEW, random_hflip, to_float
from bench.nn.backbones import Network
from bench.nn.losses import supervised_contrastive_loss
from bench.nn.shifts import N_SHIFTS, all_rotations, rotate

# --- scores of a classifier, pure functions of a model and a batch ---------------------------

def msp_score(logits: torch.Tensor) -> torch.Tensor:
    """Anomaly score: minus the maximum softmax probability (Hendrycks & Gimpel 2017)."""
    return -F.softmax(logits.float(), dim=1).max(1).values


def energy_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Anomaly score: the free energy -T logsumexp(logits / T) (Liu et al. 2020)."""
    return -temperature * torch.logsumexp(logits.float() / temperature, dim=1)


def odin_score(logits_fn, x: torch.Tensor, temperature: float, epsilon: float) -> torch.Tensor:
    """ODIN (Liang et al. 2018): temperature-scaled MSP after a small input perturbation that
    raises the top softmax score. `logits_fn` maps a float batch to logits."""
    x = x.clone().requires_grad_(True)
    log_top = F.log_softmax(logits_fn(x).float() / temperature, dim=1).max(1).values
    grad, = torch.autograd.grad(log_top.sum(), x)
    with torch.no_grad():
        perturbed = x + epsilon * grad.sign()
        return -F.softmax(logits_fn(perturbed).float() / temperature, dim=1).max(1).values


def tied_gaussians(features: torch.Tensor, labels: torch.Tensor, n_classes: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means [C, d] and the precision of the shared covariance (Lee et al. 2018; the
    pseudo-inverse, as scikit-learn's EmpiricalCovariance that their code uses)."""
    f = features.double()
    means = torch.stack([f[labels == c].mean(0) for c in range(n_classes)])
    centred = f - means[labels]
    cov = centred.t() @ centred / f.shape[0]
    return means, torch.linalg.pinv(cov, hermitian=True)


def mahalanobis_score(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor,
                      chunk: int = 1024) -> torch.Tensor:
    """Anomaly score: min over classes of the squared Mahalanobis distance (shared covariance).

    Chunks of `chunk` rows and one class at a time: memory stays at chunk x d (the N x C x d
    tensor of a one-shot einsum is gigabytes for CIFAR-100)."""
    out = []
    for part in features.double().split(chunk):
        best = torch.full((part.shape[0],), float("inf"), dtype=torch.float64, device=part.device)
        for mu in means:
            diff = part - mu
            best = torch.minimum(best, ((diff @ precision) * diff).sum(1))
        out.append(best)
    return torch.cat(out)


def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, n_out: int, epochs: int,
                    lr: float = 1e-2) -> torch.nn.Linear:
    """A linear classifier on frozen features (full batch, Adam, cross-entropy)."""
    head = torch.nn.Linear(features.shape[1], n_out).to(features.device)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(head(features), labels).backward()
        opt.step()
    return head


# --- cross-entropy classifier ----------------------------------------------------------------

class LabeledDetector(NetworkDetector):
    """A network with a class head on its features (`class_heads` outputs per class)."""

    kind = "labeled"
    needs_labels = True
    predicts_classes = True
    class_heads = 1  # outputs per class (sup-CSI: one per class and rotation)

    def build_model(self, train: ImageSet) -> Network:
        return self.network(train, n_classes=self.class_heads * len(train.classes))


@dataclass(frozen=True)
class CEConfig(ClassifierConfig):
    epochs: int = 200
    odin_temperature: float = score_field(1000.0, "ODIN's softmax temperature", gt=0)
    odin_epsilon: float = score_field(0.0014, "ODIN's input perturbation size", ge=0)


ODIN_CHUNK = 256  # images per ODIN backward pass (bounds its activation memory)


class CrossEntropy(LabeledDetector):
    """Cross-entropy classifier; scores msp, odin, mahalanobis, energy; reports accuracy."""

    Config = CEConfig
    scores = ("msp", "odin", "mahalanobis", "energy")

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.model_(self.input(CLASSIFIER_VIEW(to_float(x))))["class_logits"]
        return F.cross_entropy(logits.float(), y)

    def after_fit(self, train: ImageSet) -> None:
        feats = self.forward(train.images, to_float, ("features",))["features"]
        self.means_, self.precision_ = tied_gaussians(
            feats, train.labels.to(feats.device), len(train.classes))

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        out = self.forward(images, to_float, ("class_logits", "features"))
        logits = out["class_logits"]
        c = self.config
        odin, device = [], self.ctx_.device
        for start in range(0, images.shape[0], ODIN_CHUNK):
            x = to_float(images[start:start + ODIN_CHUNK].to(device))

            def logits_of(v: torch.Tensor) -> torch.Tensor:
                with self.ctx_.precision.autocast(device):
                    return self.model_(self.input(v))["class_logits"].float()

            odin.append(odin_score(logits_of, x, c.odin_temperature, c.odin_epsilon))
        return {"msp": to_numpy(msp_score(logits)), "odin": to_numpy(torch.cat(odin)),
                "mahalanobis": to_numpy(mahalanobis_score(out["features"], self.means_,
                                                          self.precision_)),
                "energy": to_numpy(energy_score(logits))}

    def predict_class(self, images: torch.Tensor) -> np.ndarray:
        return self.forward(images, to_float, ("class_logits",))["class_logits"].argmax(1).cpu().numpy()


# --- supervised contrastive ------------------------------------------------------------------

@dataclass(frozen=True)
class SupCLRConfig(ContrastiveConfig):
    epochs: int = 700
    temperature: float = 0.07
    normalize_input: bool = True  # CSI's code trains SupCLR and sup-CSI: its layers and loader
    color_jitter: Literal["torchvision", "csi"] = "csi"
    drop_last: bool = False
    head_epochs: int = param(200, "full-batch Adam epochs of the linear head(s) on frozen "
                                  "features", ge=1)


class SupCLR(LabeledDetector):
    """SupCLR (Khosla et al. 2020): supervised contrastive; linear head; score msp."""

    Config = SupCLRConfig
    scores = ("msp",)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = to_float(x)
        view = self.view(SIMCLR_VIEW)
        z1, z2 = self.model_(self.input(torch.cat([view(x), view(x)])))["z"].chunk(2)
        return supervised_contrastive_loss(z1, z2, y, temperature=self.config.temperature)

    def finish_training(self, train: ImageSet) -> None:
        feats = self.forward(train.images, to_float, ("features",))["features"]
        head = fit_linear_head(feats, train.labels.to(feats.device), len(train.classes),
                               self.config.head_epochs)
        self.model_.class_head.load_state_dict(head.state_dict())

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward(images, to_float, ("class_logits",))["class_logits"]

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        return {"msp": to_numpy(msp_score(self._logits(images)))}

    def predict_class(self, images: torch.Tensor) -> np.ndarray:
        return self._logits(images).argmax(1).cpu().numpy()


class SupCSI(SupCLR):
    """Supervised CSI: SupCon over rotation-shifted views with joint labels class + C x rotation;
    a joint linear head; score msp of the head marginalised over rotations."""

    Config = SupCLRConfig
    class_heads = N_SHIFTS

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        v1, v2 = random_hflip(to_float(x).repeat(2, 1, 1, 1)).chunk(2)
        (s1, shift), (s2, _) = all_rotations(v1), all_rotations(v2)
        joint = y.repeat(N_SHIFTS) + self.n_classes_ * shift
        z1, z2 = self.model_(self.input(self.view(SHIFTED_VIEW)(torch.cat([s1, s2]))))["z"].chunk(2)
        return supervised_contrastive_loss(z1, z2, joint,
                                           temperature=self.config.temperature)

    def finish_training(self, train: ImageSet) -> None:
        feats, labels = [], []
        y = train.labels.to(self.ctx_.device)
        for k in range(N_SHIFTS):
            feats.append(self.forward(train.images, lambda u8, k=k: rotate(to_float(u8), k),
                                      ("features",))["features"])
            labels.append(y + self.n_classes_ * k)
        head = fit_linear_head(torch.cat(feats), torch.cat(labels), N_SHIFTS * self.n_classes_,
                               self.config.head_epochs)
        self.model_.class_head.load_state_dict(head.state_dict())

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits marginalised over rotations: mean_k of joint logits (c, k) on x rotated by k."""
        C = self.n_classes_
        total = 0
        for k in range(N_SHIFTS):
            joint = self.forward(images, lambda u8, k=k: rotate(to_float(u8), k),
                                 ("class_logits",))["class_logits"]
            total = total + joint[:, k * C:(k + 1) * C]
        return total / N_SHIFTS

