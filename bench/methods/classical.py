"""Classical baselines from PyOD on flattened pixels, optionally PCA-reduced.

Every detector gets ``random_state`` from the job seed where PyOD takes one; scores are PyOD's
``decision_function`` (higher = more anomalous), reported as the score variant ``pixel``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from bench.datasets import ImageSet
from bench.methods.base import Detector, FitContext


def flatten(images: torch.Tensor) -> np.ndarray:
    return images.reshape(images.shape[0], -1).float().div(255.0).numpy()


@dataclass(frozen=True)
class PixelConfig:
    pca_components: int = 0  # 0: raw pixels; n > 0: project on the first n principal components


class PyODDetector(Detector):
    """Fit a PyOD model on the (optionally PCA-reduced) pixels of the training images."""

    pyod_model: ClassVar[str]  # "module:Class" inside pyod.models

    def _params(self, n_features: int, seed: int) -> dict[str, Any]:
        return {}

    def fit(self, train: ImageSet, ctx: FitContext) -> PyODDetector:
        x = flatten(train.images)
        self.pca_ = None
        if self.config.pca_components > 0:
            from sklearn.decomposition import PCA

            k = min(self.config.pca_components, x.shape[0], x.shape[1])
            self.pca_ = PCA(n_components=k, random_state=ctx.seed).fit(x)
            x = self.pca_.transform(x)
        module, _, name = self.pyod_model.partition(":")
        cls = getattr(importlib.import_module(f"pyod.models.{module}"), name)
        self.model_ = cls(**self._params(x.shape[1], ctx.seed))
        self.model_.fit(x)
        return self

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        x = flatten(images)
        if self.pca_ is not None:
            x = self.pca_.transform(x)
        return {"pixel": np.asarray(self.model_.decision_function(x), dtype=np.float64)}


@dataclass(frozen=True)
class OCSVMConfig(PixelConfig):
    kernel: str = "rbf"
    nu: float = 0.1
    gamma: str = "scale"  # "scale", "auto" or a number


class OCSVM(PyODDetector):
    """One-class SVM (Schoelkopf et al. 2001) on pixels."""

    Config = OCSVMConfig
    pyod_model = "ocsvm:OCSVM"

    def _params(self, n_features, seed):
        c = self.config
        gamma: Any = c.gamma if c.gamma in ("scale", "auto") else float(c.gamma)
        return dict(kernel=c.kernel, nu=c.nu, gamma=gamma)


@dataclass(frozen=True)
class IForestConfig(PixelConfig):
    n_estimators: int = 100


class IForest(PyODDetector):
    """Isolation Forest (Liu et al. 2008) on pixels."""

    Config = IForestConfig
    pyod_model = "iforest:IForest"

    def _params(self, n_features, seed):
        return dict(n_estimators=self.config.n_estimators, random_state=seed)


@dataclass(frozen=True)
class KNNConfig(PixelConfig):
    n_neighbors: int = 5
    method: Literal["largest", "mean", "median"] = "largest"


class KNN(PyODDetector):
    """k-nearest-neighbour distance (Ramaswamy et al. 2000) on pixels."""

    Config = KNNConfig
    pyod_model = "knn:KNN"

    def _params(self, n_features, seed):
        return dict(n_neighbors=self.config.n_neighbors, method=self.config.method)


@dataclass(frozen=True)
class LOFConfig(PixelConfig):
    n_neighbors: int = 20


class LOF(PyODDetector):
    """Local outlier factor (Breunig et al. 2000) on pixels."""

    Config = LOFConfig
    pyod_model = "lof:LOF"

    def _params(self, n_features, seed):
        return dict(n_neighbors=self.config.n_neighbors)


@dataclass(frozen=True)
class PCAConfig(PixelConfig):
    n_components: int = 0  # 0: PyOD's default (all components)


class PCA(PyODDetector):
    """PCA reconstruction error (Shyu et al. 2003) on pixels."""

    Config = PCAConfig
    pyod_model = "pca:PCA"

    def _params(self, n_features, seed):
        k = self.config.n_components or None
        return dict(n_components=k, random_state=seed)


@dataclass(frozen=True)
class ECODConfig(PixelConfig):
    pass


class ECOD(PyODDetector):
    """Empirical-CDF outlier detection (Li et al. 2022) on pixels."""

    Config = ECODConfig
    pyod_model = "ecod:ECOD"


@dataclass(frozen=True)
class COPODConfig(PixelConfig):
    pass


class COPOD(PyODDetector):
    """Copula-based outlier detection (Li et al. 2020) on pixels."""

    Config = COPODConfig
    pyod_model = "copod:COPOD"


@dataclass(frozen=True)
class KDEConfig(PixelConfig):
    bandwidth: float = 1.0


class KDE(PyODDetector):
    """Kernel density estimate on pixels."""

    Config = KDEConfig
    pyod_model = "kde:KDE"

    def _params(self, n_features, seed):
        return dict(bandwidth=self.config.bandwidth)


@dataclass(frozen=True)
class DeepSVDDConfig(PixelConfig):
    epochs: int = 100
    batch_size: int = 32
    hidden_neurons: str = "64,32"  # comma-separated widths of the MLP


class DeepSVDD(PyODDetector):
    """Deep SVDD (Ruff et al. 2018), PyOD's MLP, on pixels."""

    Config = DeepSVDDConfig
    pyod_model = "deep_svdd:DeepSVDD"

    def _params(self, n_features, seed):
        c = self.config
        hidden = [int(h) for h in c.hidden_neurons.split(",") if h.strip()]
        return dict(n_features=n_features, epochs=c.epochs, batch_size=c.batch_size,
                    hidden_neurons=hidden, random_state=seed, verbose=0)
