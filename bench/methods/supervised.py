"""Labeled OOD baselines: a cross-entropy classifier (MSP, ODIN), SupCLR and supervised CSI with
linear heads on the frozen encoder; each with the post-hoc scores of its features and its class
head's logits (bench/nn/posthoc.py: energy, MaxLogit, GEN, ReAct, ASH-S, ASH-B, ViM, SHE)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import param, score_field
from bench.datasets import ImageSet
from bench.methods.base import to_numpy
from bench.methods.network import (
    ClassifierConfig,
    ContrastiveConfig,
    LogitScoreConfig,
    NetworkDetector,
)
from bench.nn import posthoc
from bench.nn.augment import CLASSIFIER_VIEW, SHIFTED_VIEW, SIMCLR_VIEW, random_hflip, to_float
from bench.nn.backbones import InputNorm, Network
from bench.nn.losses import supervised_contrastive_loss
from bench.nn.shifts import N_SHIFTS, all_rotations, rotate

# --- scores of a classifier, pure functions of a model and a batch ---------------------------

def odin_score(logits_fn, x: torch.Tensor, temperature: float, epsilon: float) -> torch.Tensor:
    """ODIN (Liang et al. 2018): temperature-scaled MSP after a small input perturbation that
    raises the top softmax score. `logits_fn` maps a float batch to logits."""
    x = x.clone().requires_grad_(True)
    log_top = F.log_softmax(logits_fn(x).float() / temperature, dim=1).max(1).values
    grad, = torch.autograd.grad(log_top.sum(), x)
    with torch.no_grad():
        perturbed = x + epsilon * grad.sign()
        return -F.softmax(logits_fn(perturbed).float() / temperature, dim=1).max(1).values


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
    """A network with a class head on its features (`class_heads` outputs per class); it offers
    the post-hoc logit scores of that head as well as the feature scores."""

    kind = "labeled"
    needs_labels = True
    predicts_classes = True
    class_heads = 1  # outputs per class (sup-CSI: one per class and rotation)
    outputs: ClassVar[frozenset[str]] = frozenset({"features", "logits", "head"})

    def build_model(self, train: ImageSet) -> Network:
        return self.network(train, n_classes=self.class_heads * len(train.classes))

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W [C, d], b [C]) of the class logits the logit scores read."""
        head = self.model_.class_head
        return head.weight.detach().float(), head.bias.detach().float()


@dataclass(frozen=True)
class CEConfig(ClassifierConfig, LogitScoreConfig):
    epochs: int = 200
    odin_temperature: float = score_field(1000.0, "ODIN's softmax temperature", gt=0)
    odin_epsilon: float = score_field(0.0014, "ODIN's input perturbation size", ge=0)


ODIN_CHUNK = 256  # images per ODIN backward pass (bounds its activation memory)


class CrossEntropy(LabeledDetector):
    """Cross-entropy classifier; scores msp, odin and the post-hoc ones; reports accuracy."""

    Config = CEConfig
    scores = ("msp", "odin")
    # OpenOOD v1.5's configs/postprocessors/odin.yml postprocessor_sweep
    score_sweeps = {"odin": (("odin_temperature", (1.0, 10.0, 100.0, 1000.0)),
                             ("odin_epsilon", (0.0014, 0.0028)))}

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.model_(self.input(CLASSIFIER_VIEW(to_float(x))))["class_logits"]
        return F.cross_entropy(logits.float(), y)

    def method_scores(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        logits = self.forward(images, to_float, ("class_logits",))["class_logits"]
        c = self.config
        odin, device = [], self.ctx_.device
        for start in range(0, images.shape[0], ODIN_CHUNK):
            x = to_float(images[start:start + ODIN_CHUNK].to(device))

            def logits_of(v: torch.Tensor) -> torch.Tensor:
                with self.ctx_.precision.autocast(device):
                    return self.model_(self.input(v))["class_logits"].float()

            odin.append(odin_score(logits_of, x, c.odin_temperature, c.odin_epsilon))
        return {"msp": to_numpy(posthoc.msp(logits)), "odin": to_numpy(torch.cat(odin))}

    def predict_class(self, images: torch.Tensor) -> np.ndarray:
        return self.forward(images, to_float, ("class_logits",))["class_logits"].argmax(1).cpu().numpy()


# --- supervised contrastive ------------------------------------------------------------------

@dataclass(frozen=True)
class SupCLRConfig(ContrastiveConfig, LogitScoreConfig):
    epochs: int = 700
    temperature: float = 0.07
    input_norm: InputNorm = "csi"  # CSI's code trains SupCLR and sup-CSI: its layers and loader
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

    def method_scores(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        return {"msp": to_numpy(posthoc.msp(self._logits(images)))}

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

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotation-0 block of the joint head: class logits of un-rotated features (the logit
        scores read one feature vector per image)."""
        w, b = super().linear_head()
        return w[:self.n_classes_], b[:self.n_classes_]

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits marginalised over rotations: mean_k of joint logits (c, k) on x rotated by k."""
        C = self.n_classes_
        total = 0
        for k in range(N_SHIFTS):
            joint = self.forward(images, lambda u8, k=k: rotate(to_float(u8), k),
                                 ("class_logits",))["class_logits"]
            total = total + joint[:, k * C:(k + 1) * C]
        return total / N_SHIFTS

