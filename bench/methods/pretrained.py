"""Methods on ImageNet-pretrained networks: the feature sources of the classical detectors
(`--features resnet152-in1k`: DN2 is `knn` with k = 2 on them) and the skeleton PANDA and MSC
fine-tune on. The networks, their weights and preprocessing are the engine's
(`bench/nn/pretrained.py`): torchvision's weight API (`<model>-in1k`: its IMAGENET1K_V1 weights,
downloaded checksummed into torch's hub cache), timm when it is installed (`timm-<model>`), or a
local state-dict file (`--set <name>.weights=PATH`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import Config, param, score_field
from bench.datasets import ImageSet
from bench.errors import BenchError
from bench.methods.base import Detector, to_numpy
from bench.methods.network import NetworkDetector
from bench.nn.context import FitContext
from bench.nn.pretrained import (
    TIMM_PREFIX,
    TORCHVISION_SUFFIX,
    PretrainedNet,
    build_backbone,
    check_input_size,
    check_weights,
    check_weights_file,
    forward_features,
    resolve_weights,
)


@dataclass(frozen=True)
class PretrainedConfig(Config):
    arch: str = param("resnet152", "the pretrained network: a torchvision model with ImageNet "
                                   "weights (resnet18, resnet152, vit_b_16, ...) or timm-<model>")
    weights: str = param("", "empty: the ImageNet weights (torchvision's IMAGENET1K_V1, "
                             "downloaded checksummed into torch's hub cache; timm's default); "
                             "a state-dict file; none: random init (tests)")
    image_size: int = param(0, "the crop the images are resized to (0: the weights' own, 224; "
                               "the resize keeps the weights' resize / crop ratio)", ge=0)
    score_batch_size: int = score_field(256, "images per forward pass when embedding", ge=1)




class UsesPretrainedWeights:
    """What a class on pretrained weights declares to the runner: the weights' name and hash
    in its job identity, and the weights checked (or downloaded) before a run writes."""

    @classmethod
    def identity(cls, config: PretrainedConfig) -> dict[str, str]:
        w = resolve_weights(config)
        return {"weights": w.name, "weights_sha256": w.sha256}

    @classmethod
    def prepare_run(cls, config: PretrainedConfig, download: bool, owner: str) -> None:
        w = check_weights(config, download, owner)
        check_weights_file(config, w)
        check_input_size(config, w, owner)


class PretrainedEncoder(UsesPretrainedWeights, Detector):
    """An ImageNet-pretrained network as a feature source (`--features <model>-in1k`): not
    trained; the features of each image set are cached with the job's model folder (the
    network is built only when they must be computed)."""

    Config: ClassVar[type] = PretrainedConfig
    kind = "pretrained"
    scores = ()

    def fit_encoder(self, train: ImageSet, ctx: FitContext) -> PretrainedEncoder:
        self.ctx_ = ctx
        return self

    def fit(self, train: ImageSet, ctx: FitContext) -> PretrainedEncoder:
        return self.fit_encoder(train, ctx)

    @functools.cached_property
    def net_(self) -> PretrainedNet:
        from bench.nn import train as engine

        w = resolve_weights(self.config)
        return engine.prepare_model(PretrainedNet(build_backbone(self.config, w), w),
                                    self.ctx_.device, self.ctx_.precision).eval()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return forward_features(self.net_, images, self.ctx_, self.config.score_batch_size)

    def embed(self, images: torch.Tensor) -> np.ndarray:
        """The pooled penultimate features, raw (DN2 and PANDA's k-NN use Euclidean distances
        on them), cached per image set."""
        feats = self.ctx_.cached("pretrained", images, lambda: {"f": self.features(images)})
        return to_numpy(feats["f"])

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        raise BenchError(f"{self.config.arch}: a feature source, not a detector; run a "
                         "classical method on it (--methods knn --features <its name>)")

    @property
    def backbone(self) -> str:
        return self.config.arch

    @property
    def epochs(self) -> int:
        return 0


def is_pretrained_name(name: str) -> bool:
    return name.endswith(TORCHVISION_SUFFIX) or name.startswith(TIMM_PREFIX)


@functools.cache
def encoder_class(name: str) -> type:
    """The feature-source class of `<model>-in1k` or `timm-<model>`: PretrainedEncoder with
    the model as its config's default."""
    arch = name.removesuffix(TORCHVISION_SUFFIX)
    config = dataclasses.make_dataclass(
        f"{arch}Config", [("arch", str, param(arch, "the pretrained network"))],
        bases=(PretrainedConfig,), frozen=True)
    return type(f"Pretrained_{arch}", (PretrainedEncoder,),
                {"Config": config, "__module__": __name__,
                 "__doc__": f"ImageNet-pretrained {arch} features (a feature source)."})


@dataclass(frozen=True)
class FineTuneConfig(PretrainedConfig):
    """What PANDA and MSC read: the pretrained network, its frozen stages, SGD at a constant
    learning rate, and the k-NN score."""

    freeze: tuple[str, ...] = param(
        ("auto",), "the backbone's stages left frozen; auto: the official code's for the network "
                   "(PANDA: conv1, bn1, layer1, layer2; MSC: those of a ResNet-152, none of "
                   "another network)")
    epochs: int = param(15, "training epochs", ge=1)
    batch_size: int = param(32, "images per step", ge=1)
    lr: float = param(1e-2, "learning rate (constant, as the code)", gt=0)
    momentum: float = param(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = param(5e-5, "weight decay", ge=0)
    checkpoint_every: int = param(5, "epochs between checkpoints", ge=1)
    max_train_samples: int = param(
        0, "train on a seeded random subset of this many images (0: all); scores use all", ge=0)
    n_neighbors: int = score_field(2, "k of the k-NN score (the code: 2)", ge=1)
    posthoc: bool = score_field(True, "add the post-hoc scores of the features (deep-knn, "
                                      "mahalanobis: bench/nn/posthoc.py's table)")
    knn_k: int = score_field(50, "deep-knn: distance to the k-th nearest training feature", ge=1)


class FineTunedDetector(UsesPretrainedWeights, NetworkDetector):
    """PANDA's and MSC's skeleton: an ImageNet-pretrained network fine-tuned on the normal
    images by the network skeleton (the engine's loop: checkpoints, resume, precision), scored by
    the k-NN distance of its features to the training set's and the post-hoc feature scores."""

    kind = "pretrained"
    in_default_run = False  # needs ImageNet weights (a download): run it by name
    scores = ("knn",)
    normalise_features: ClassVar[bool] = False  # MSC's network outputs unit vectors

    def build_model(self, train: ImageSet | None = None) -> PretrainedNet:
        """The pretrained network behind its preprocessing, the configured stages frozen."""
        w = resolve_weights(self.config)
        net = PretrainedNet(build_backbone(self.config, w), w)
        for stage in self.frozen_stages():
            module = getattr(net.backbone, stage, None)
            if not isinstance(module, torch.nn.Module):
                raise BenchError(f"freeze: {self.config.arch} has no stage {stage!r}")
            for p in module.parameters():
                p.requires_grad_(False)
        return net

    # the stages the official code freezes (PANDA's utils.freeze_parameters)
    OFFICIAL_FROZEN: ClassVar[tuple[str, ...]] = ("conv1", "bn1", "layer1", "layer2")

    def frozen_stages(self) -> tuple[str, ...]:
        """The stages `freeze` names; auto: the official code's for the network."""
        if self.config.freeze == ("auto",):
            return self.official_frozen(self.config.arch)
        return tuple(self.config.freeze)

    @classmethod
    def official_frozen(cls, arch: str) -> tuple[str, ...]:
        return cls.OFFICIAL_FROZEN

    def optimizer(self) -> torch.optim.Optimizer:
        """The code's SGD over the trainable parameters (constant learning rate)."""
        c = self.config
        return torch.optim.SGD([p for p in self.model_.parameters() if p.requires_grad],
                               lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                               foreach=True)

    def schedule(self, opt: torch.optim.Optimizer, steps: int):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)  # constant, as the code

    def before_training(self, images: torch.Tensor) -> None:
        self.model_.center = self.initial_center(images)

    def after_fit(self, train: ImageSet) -> None:
        self.bank_ = self.features(train.images)

    def initial_center(self, images: torch.Tensor) -> torch.Tensor:
        """The mean feature of the normal images under the pretrained weights."""
        return self.features(images).mean(0)

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a float batch at the network's resolution, as the method trains them."""
        f = self.model_(self.model_.prepare(x) if x.shape[-1] != self.model_.crop else x)
        return F.normalize(f["features"], dim=1) if self.normalise_features else f["features"]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        f = forward_features(self.model_, images, self.ctx_, self.config.score_batch_size)
        return F.normalize(f, dim=1) if self.normalise_features else f

    def training_loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The method's loss on a batch of uint8 images (labels unused: one-class)."""
        raise NotImplementedError

    def method_scores(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        from bench.nn.scoring import knn_sum_of_squares

        f = self.features(images)
        return {"knn": to_numpy(knn_sum_of_squares(f, self.bank_, self.config.n_neighbors))}

    def penultimate(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    def train_features(self, train: ImageSet) -> torch.Tensor:
        return self.bank_

    def embed(self, images: torch.Tensor) -> np.ndarray:
        return to_numpy(F.normalize(self.features(images), dim=1))

    @property
    def backbone(self) -> str:
        return self.config.arch
