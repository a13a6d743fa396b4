"""What the self-supervised detectors share: the config fields of the engine and the fit skeleton.

A method subclasses `SSLDetector`, builds its network in `build_model`, writes its loss for one
batch in `training_loss` (its training loop, readable on one screen) and its scores in `score`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from bench.config import score_field
from bench.datasets import ImageSet
from bench.methods.base import Detector, FitContext, to_numpy
from bench.nn import train as engine
from bench.nn.backbones import ContrastiveNet


@dataclass(frozen=True)
class SSLConfig:
    backbone: str = "resnet18"
    epochs: int = 100
    batch_size: int = 128  # source images per step (before views and shifts)
    optimizer: Literal["sgd", "lars", "adam"] = "lars"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-6
    nesterov: bool = False
    warmup_epochs: int = 10
    final_lr_fraction: float = 0.0  # cosine schedule ends at lr * this
    proj_hidden: int = 512
    proj_dim: int = 128
    temperature: float = 0.5
    checkpoint_every: int = 10  # epochs
    max_train_samples: int = 0  # 0: all; n: train on a seeded random subset of n images
    score_batch_size: int = score_field(1024, "images per forward pass when scoring")


class SSLDetector(Detector):
    """Fit skeleton: data on the device, optimiser and schedule, train (or load) the network."""

    def build_model(self, train: ImageSet) -> ContrastiveNet:
        raise NotImplementedError

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of one batch: x uint8 images on the device, y their class labels."""
        raise NotImplementedError

    def finish_training(self, train: ImageSet) -> None:
        """Train what sits on the trained encoder (linear heads); kept with the model."""

    def after_fit(self, train: ImageSet) -> None:
        """Features of the training set that scoring needs (banks, Gaussians)."""

    def fit(self, train: ImageSet, ctx: FitContext) -> SSLDetector:
        c = self.config
        self.ctx_ = ctx
        self.n_classes_ = len(train.classes)
        self.model_ = engine.prepare_model(self.build_model(train), ctx.device)
        if ctx.compile:
            self.model_.compile()  # in place, so checkpoints and saved models keep their keys
        subset = train
        if c.max_train_samples and len(train) > c.max_train_samples:
            g = torch.Generator().manual_seed(ctx.seed)
            subset = train.subset(torch.randperm(len(train), generator=g)[:c.max_train_samples])
        images = engine.device_images(subset.images, ctx.device)
        labels = subset.labels.to(ctx.device)
        batch = min(c.batch_size, len(subset))

        def fit_model() -> list[dict[str, float]]:
            opt = engine.make_optimizer(self.model_.parameters(), c.optimizer, c.lr, c.momentum,
                                        c.weight_decay, c.nesterov)
            per_epoch = engine.steps_per_epoch(len(subset), batch)
            sched = engine.cosine_schedule(opt, c.epochs * per_epoch, c.warmup_epochs * per_epoch,
                                           c.final_lr_fraction)
            history = engine.train(
                self.model_, lambda idx: self.training_loss(images[idx], labels[idx]), len(subset),
                epochs=c.epochs, batch_size=batch, optimizer=opt, scheduler=sched, ctx=ctx,
                desc=type(self).__name__, checkpoint_every=c.checkpoint_every)
            self.finish_training(train)
            return history

        self.history = engine.train_or_load(self.model_, ctx, fit_model)
        self.model_.eval()
        engine.reseed(ctx.seed, "train-features")  # same bank after training or loading
        self.after_fit(train)
        return self

    def forward(self, images: torch.Tensor, transform, keys=("z",)) -> dict[str, torch.Tensor]:
        """Model outputs for uint8 `images` (any device) under `transform` of the float batch."""
        return engine.batched_forward(self.model_, images, transform, self.config.score_batch_size,
                                      self.ctx_.device, keys, progress=self.ctx_.progress)

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
        """Backbone features of un-augmented images (t-SNE, linear probes)."""
        from bench.nn.augment import to_float

        return to_numpy(self.forward(images, to_float, ("features",))["features"])
