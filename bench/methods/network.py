"""What the methods with a network share: the engine's config fields and the fit skeleton.

A method subclasses `NetworkDetector`, builds its network in `build_model`, writes its loss for
one batch in `training_loss` and its scores in `score`. `NetworkConfig` holds what every network
method reads (backbone, optimiser, schedule, checkpoints); `ContrastiveConfig` adds the projection
head and the temperature of the contrastive methods; `ClassifierConfig` sets the cross-entropy
classifiers' SGD settings. Their defaults are CSI's paper settings; a method's config overrides
what its own paper does differently (the `paper` preset is the defaults).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import Config, param, score_field
from bench.datasets import ImageSet
from bench.methods.base import Detector, PosthocScoring, to_numpy
from bench.nn import imports
from bench.nn import train as engine
from bench.nn.augment import ViewAugment, to_float
from bench.nn.backbones import BackboneName, InputNorm, Network, input_stats
from bench.nn.context import FitContext
from bench.nn.optim import make_optimizer, make_schedule, steps_per_epoch
from bench.nn.state import reseed, train_or_load


@dataclass(frozen=True)
class NetworkConfig(Config):
    backbone: BackboneName = param(
        "resnet18", "network: CIFAR ResNet-18/34 (paper), resnet-small (quick), resnet-tiny (tests)")
    init: Literal["torch", "mcl"] = param(
        "torch", "weight init: PyTorch's defaults, or MCL's code (kaiming-normal fan-out convs)")
    input_norm: InputNorm = param(
        "none", "inputs normalised inside the network: none ([0, 1]), csi (CSI's NormalizeLayer, "
                "[-1, 1]) or openood (OpenOOD's per-data-set mean and std)")
    epochs: int = param(1000, "training epochs", ge=1)
    batch_size: int = param(128, "source images per step (before views and shifts)", ge=1)
    drop_last: bool = param(True, "drop the last partial batch of an epoch (MCL's loader; CSI's "
                                  "keeps it)")
    optimizer: Literal["sgd", "lars", "adam"] = param("lars", "optimiser (lars: torchlars' rule)")
    lr: float = param(1.0, "peak learning rate", gt=0)
    momentum: float = param(0.9, "SGD / LARS momentum", ge=0, lt=1)
    weight_decay: float = param(1e-6, "weight decay", ge=0)
    nesterov: bool = param(False, "Nesterov momentum")
    lars_exclude_1d: bool = param(
        False, "LARS: leave biases and BatchNorm (1-d) unscaled and undecayed (SimCLR's LARS; "
               "torchlars and CSI scale every parameter)")
    schedule: Literal["csi", "cosine"] = param(
        "csi", "lr schedule: csi = warm-up from lr/10 then cosine, as CSI's code; cosine = "
               "linear warm-up from 0, then cosine to lr x final_lr_fraction")
    warmup_epochs: int = param(10, "warm-up epochs", ge=0)
    final_lr_fraction: float = param(0.0, "cosine schedule: where it ends, as a fraction of lr",
                                     ge=0, le=1)
    checkpoint_every: int = param(10, "epochs between checkpoints", ge=1)
    max_train_samples: int = param(
        0, "train on a seeded random subset of this many images (0: all); scores use all", ge=0)
    score_batch_size: int = score_field(1024, "images per forward pass when scoring", ge=1)
    posthoc: bool = score_field(
        True, "add the post-hoc scores of the network's penultimate features (deep-knn, "
              "mahalanobis; rmds with labels; a class head's logit scores too)")
    knn_k: int = score_field(50, "deep-knn: distance to the k-th nearest training feature (Sun "
                                 "et al. 2022 and OpenOOD: 50)", ge=1)


@dataclass(frozen=True)
class ContrastiveConfig(NetworkConfig):
    """Methods trained with a contrastive loss on a projection head."""

    proj_hidden: int = param(512, "hidden width of the projection head", ge=1)
    proj_dim: int = param(128, "projection dimension", ge=1)
    temperature: float = param(0.5, "softmax temperature of the contrastive loss", gt=0)
    color_jitter: Literal["torchvision", "csi"] = param(
        "torchvision", "colour jitter of the views: torchvision's after the crop (SimCLR's, MCL's "
                       "code), or CSI's layers before it")


@dataclass(frozen=True)
class EnsembleScoreConfig:
    """CSI's test-time ensemble, shared by CSI's and SimCLR's scores."""

    ens_samples: int = score_field(10, "T augmented samples averaged per image (and rotation)",
                                   ge=1)
    test_crop_area: float = score_field(0.54, "fixed crop area of the scoring augmentation",
                                        gt=0, le=1)


@dataclass(frozen=True)
class LogitScoreConfig:
    """The post-hoc logit scores' settings: the papers' and OpenOOD v1.5's defaults."""

    vim_dim: int = score_field(0, "ViM's principal dimension (0: the authors' rule, 256 of "
                                  "ResNet-18's 512 as OpenOOD)", ge=0)
    react_percentile: float = score_field(90.0, "ReAct's clipping percentile of the training "
                                                "activations", gt=0, lt=100)
    ash_percentile: float = score_field(90.0, "ASH-S and ASH-B: the percentage of activations "
                                              "pruned", ge=0, lt=100)
    gen_gamma: float = score_field(0.1, "GEN's gamma", gt=0)
    gen_m: int = score_field(100, "GEN's M: the largest probabilities summed (at most the "
                                  "classes)", ge=1)


@dataclass(frozen=True)
class ClassifierConfig(NetworkConfig):
    """Networks trained with cross-entropy (rotation prediction, the CE baseline): Hendrycks et
    al.'s SGD settings, no projection head."""

    optimizer: Literal["sgd", "lars", "adam"] = "sgd"
    lr: float = 0.1
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: Literal["csi", "cosine"] = "cosine"
    warmup_epochs: int = 0


def compile_options(mode: str) -> dict[str, str]:
    """torch.compile's arguments for a --compile mode (default: no mode argument)."""
    return {} if mode in ("", "default") else {"mode": mode}


class NetworkDetector(PosthocScoring, Detector):
    """Fit skeleton: data on the device, optimiser and schedule, train (or load) the network;
    a method's own scores (`method_scores`) and the post-hoc scores of its features."""

    kind = "self-supervised"

    def build_model(self, train: ImageSet) -> Network:
        """The method's network: the config's backbone and heads (override to add heads)."""
        return self.network(train)

    def network(self, train: ImageSet, **heads: int) -> Network:
        """The config's backbone with `heads` (n_shifts, n_classes); a contrastive config adds
        its projection head."""
        c = self.config
        if isinstance(c, ContrastiveConfig):
            heads = {"proj_hidden": c.proj_hidden, "proj_dim": c.proj_dim, **heads}
        mean, std = input_stats(c.input_norm, train.name, train.shape[0])
        return Network(c.backbone, train.shape[0], init=c.init, input_mean=mean, input_std=std,
                       **heads)

    def view(self, augment: ViewAugment) -> ViewAugment:
        """`augment` with the config's colour jitter (contrastive methods choose theirs)."""
        style = getattr(self.config, "color_jitter", augment.style)
        return augment if style == augment.style else dataclasses.replace(augment, style=style)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of one batch: x uint8 images on the device, y their class labels."""
        raise NotImplementedError

    clip_grad_norm: ClassVar[float] = 0.0  # > 0: gradients clipped to this norm each step

    @property
    def drop_last(self) -> bool:
        return bool(getattr(self.config, "drop_last", False))

    def optimizer(self) -> torch.optim.Optimizer:
        """The config's optimiser over the network's parameters (LARS, SGD or Adam)."""
        return make_optimizer(self.model_.parameters(), self.config)

    def schedule(self, opt: torch.optim.Optimizer, steps: int):
        """The config's learning-rate schedule, `steps` optimiser steps per epoch."""
        return make_schedule(opt, self.config, steps)

    def before_training(self, images: torch.Tensor) -> None:
        """What the network needs from the training images before the first step (PANDA's and
        MSC's centre); saved with the model."""

    def finish_training(self, train: ImageSet) -> None:
        """Train what sits on the trained encoder (linear heads); kept with the model."""

    def after_fit(self, train: ImageSet) -> None:
        """Features of the training set that scoring needs (banks, Gaussians)."""

    def fit(self, train: ImageSet, ctx: FitContext) -> NetworkDetector:
        """Train (or load) the network, then the training-set features its scores need."""
        self.fit_encoder(train, ctx)
        reseed(ctx.seed, "train-features")  # same bank after training or loading
        self.after_fit(train)
        if self.config.posthoc:
            self.fit_posthoc(train)
        return self

    def method_scores(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """The method's own scores (its paper's, named in `scores`), higher = more anomalous;
        a method without its own has only the post-hoc ones."""
        return {}

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        tuned = getattr(self, "own_config_", None)  # the settings `tune` chose
        scores = (self.method_scores(images) if tuned is None
                  else self._with_config(tuned, lambda: self.method_scores(images)))
        if self.config.posthoc:
            scores.update({k: to_numpy(v) for k, v in self.posthoc_of(images).items()})
        return scores

    def _with_config(self, config, compute: Callable[[], dict]) -> dict:
        """`compute()` with the detector's config set to `config` for its duration."""
        base, self.config = self.config, config
        try:
            return compute()
        finally:
            self.config = base

    def tune(self, id_images: torch.Tensor, ood_images: torch.Tensor) -> dict:
        """OpenOOD's search for the method's own scores with a grid (`score_sweeps`) and for
        the post-hoc ones (bench/tuning.py); `score` then uses the settings chosen. A sweep's
        fields are read by its score only, so one config holds every score's choice and the
        method's scores stay one pass."""
        from bench.tuning import search, validation_auroc

        chosen, settings = {}, {}
        for name, sweep in self.score_sweeps.items():
            def auroc(combo, name=name):
                config = dataclasses.replace(self.config, **combo)
                id_s, ood_s = (self._with_config(config, lambda x=x: self.method_scores(x))[name]
                               for x in (id_images, ood_images))
                return validation_auroc(id_s, ood_s)

            choice = search(sweep, auroc)
            settings.update(choice.settings)  # empty when nothing of the grid fits
            chosen[name] = choice
        self.own_config_ = dataclasses.replace(self.config, **settings) if settings else None
        if self.config.posthoc:
            chosen.update(self.tune_posthoc(id_images, ood_images))
        return chosen

    def penultimate(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate (backbone) features of un-augmented images, [N, d] float32."""
        return self.forward(images, to_float, ("features",))["features"]

    def fit_encoder(self, train: ImageSet, ctx: FitContext) -> NetworkDetector:
        """Train the network, or load it from ctx.model_dir; no scoring state."""
        c = self.config
        self.ctx_ = ctx
        self.n_classes_ = len(train.classes)
        self.model_ = engine.prepare_model(self.build_model(train), ctx.device, ctx.precision)
        if ctx.compile:  # in place, so checkpoints and saved models keep their keys
            self.model_.compile(**compile_options(ctx.compile))
        if ctx.checkpoint:  # an imported network: scored, not trained (bench/nn/imports.py)
            imports.load_into(imports.read(ctx.checkpoint, ctx.checkpoint_sha256), self.model_)
            ctx.log(f"using the network of {ctx.checkpoint}")
            self.history = []
            self.model_.eval()
            return self
        subset = train
        if c.max_train_samples and len(train) > c.max_train_samples:
            g = torch.Generator().manual_seed(ctx.seed)
            subset = train.subset(torch.randperm(len(train), generator=g)[:c.max_train_samples])
        images = engine.device_images(subset.images, ctx.device)
        labels = subset.labels.to(ctx.device)
        batch = min(c.batch_size, len(subset))

        def fit_model() -> list[dict[str, float]]:
            self.before_training(images)
            opt = self.optimizer()
            sched = self.schedule(opt, steps_per_epoch(len(subset), batch, self.drop_last))
            history = engine.train(
                self.model_, lambda idx: self.training_loss(images[idx], labels[idx]), len(subset),
                epochs=c.epochs, batch_size=batch, optimizer=opt, scheduler=sched, ctx=ctx,
                desc=type(self).__name__, checkpoint_every=c.checkpoint_every,
                drop_last=self.drop_last, clip_grad_norm=self.clip_grad_norm)
            self.finish_training(train)
            return history

        self.history = train_or_load(self.model_, ctx, fit_model)
        self.model_.eval()
        return self

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """A float batch laid out for the network under the run's precision policy."""
        return engine.as_input(x, self.ctx_.precision)

    def forward(self, images: torch.Tensor, transform, keys=("z",)) -> dict[str, torch.Tensor]:
        """Model outputs for uint8 `images` (any device) under `transform` of the float batch."""
        return engine.batched_forward(self.model_, images, transform, self.config.score_batch_size,
                                      self.ctx_.device, keys, progress=self.ctx_.progress,
                                      precision=self.ctx_.precision)

    def ensemble_mean(self, n_samples: int, sample: Callable[[], dict[str, torch.Tensor]]
                      ) -> dict[str, torch.Tensor]:
        """Per key, the mean of `sample()` over `n_samples` draws of its random augmentation
        (the test-time ensembles of CSI and SimCLR's scores)."""
        total: dict[str, torch.Tensor] = {}
        for _ in range(n_samples):
            for key, value in sample().items():
                total[key] = value if key not in total else total[key] + value
        return {key: value / n_samples for key, value in total.items()}

    def embed(self, images: torch.Tensor) -> np.ndarray:
        """Penultimate (backbone) features of un-augmented images, L2-normalised as papers do for
        k-NN, OC-SVM and t-SNE on learned features."""
        feats = self.forward(images, to_float, ("features",))["features"]
        return to_numpy(F.normalize(feats, dim=1))
