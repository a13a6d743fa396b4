"""Classical baselines from PyOD, on flattened pixels (optionally PCA-reduced) or on the
embeddings of a trained self-supervised encoder (`OnFeatures`, ``bench run --features mcl``).

Every detector gets ``random_state`` from the job seed where PyOD takes one; scores are PyOD's
``decision_function`` (higher = more anomalous), reported as the score variant ``pixel``, or
``<encoder>-feat`` on learned features. A config's own fields (after `PixelConfig`'s) are PyOD's
keyword arguments of the same names.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from bench.config import Config, param
from bench.datasets import ImageSet
from bench.methods.base import Detector
from bench.nn.context import FitContext


def flatten(images: torch.Tensor) -> np.ndarray:
    return images.reshape(images.shape[0], -1).float().div(255.0).numpy()


@dataclass(frozen=True)
class PixelConfig(Config):
    pca_components: int = param(
        0, "0: raw inputs; n > 0: project on the first n principal components", ge=0)


class PyODDetector(Detector):
    """Fit a PyOD model on rows of numbers: pixels here, or learned features (`OnFeatures`)."""

    kind = "classical"
    scores = ("pixel", "<encoder>-feat")
    pyod_model: ClassVar[str]  # "module:Class" inside pyod.models

    @classmethod
    def declared_scores(cls, config: Any, labeled: bool) -> tuple[str, ...]:
        return ("pixel",)

    def _params(self, n_features: int) -> dict[str, Any]:
        """PyOD's keyword arguments: the config's own fields (hook for the odd ones out)."""
        own = {f.name for f in dataclasses.fields(PixelConfig)}
        return {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)
                if f.name not in own}

    def fit_array(self, x: np.ndarray, seed: int) -> PyODDetector:
        self.pca_ = None
        if self.config.pca_components > 0:
            from sklearn.decomposition import PCA

            k = min(self.config.pca_components, x.shape[0], x.shape[1])
            self.pca_ = PCA(n_components=k, random_state=seed).fit(x)
            x = self.pca_.transform(x)
        cls = self._model_class()
        params = self._params(x.shape[1])
        if "random_state" in inspect.signature(cls).parameters:
            params["random_state"] = seed
        self.model_ = cls(**params)
        self.model_.fit(x)
        return self

    def _model_class(self) -> type:
        module, _, name = self.pyod_model.partition(":")
        return getattr(importlib.import_module(f"pyod.models.{module}"), name)

    def score_array(self, x: np.ndarray) -> np.ndarray:
        if self.pca_ is not None:
            x = self.pca_.transform(x)
        return np.asarray(self.model_.decision_function(x), dtype=np.float64)

    def fit(self, train: ImageSet, ctx: FitContext) -> PyODDetector:
        return self.fit_array(flatten(train.images), ctx.seed)

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        return {"pixel": self.score_array(flatten(images))}


@dataclass(frozen=True)
class FeaturesConfig:
    """A classical detector and the network method whose features it sees, with their configs."""

    classical: str
    classical_config: Any
    encoder: str
    encoder_config: Any


class OnFeatures(Detector):
    """A classical detector on the penultimate features of an encoder (its `embed`: L2-normalised
    for a trained network, raw for an ImageNet-pretrained one, as DN2): a trained encoder is
    loaded from its own model folder, ``ctx.encoder_model_dir`` (trained first if it is not
    there)."""

    kind = "classical"
    Config = FeaturesConfig

    @classmethod
    def declared_scores(cls, config: FeaturesConfig, labeled: bool) -> tuple[str, ...]:
        return (f"{config.encoder}-feat",)

    def fit(self, train: ImageSet, ctx: FitContext) -> OnFeatures:
        from bench.registry import method_class

        c = self.config
        self.encoder_ = method_class(c.encoder)(c.encoder_config)
        self.classical_ = method_class(c.classical)(c.classical_config)
        self.encoder_.fit_encoder(train, dataclasses.replace(
            ctx, model_dir=ctx.encoder_model_dir, checkpoint=ctx.encoder_checkpoint,
            checkpoint_sha256=ctx.encoder_checkpoint_sha256))
        self.classical_.fit_array(self.encoder_.embed(train.images), ctx.seed)
        return self

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        features = self.encoder_.embed(images)
        return {f"{self.config.encoder}-feat": self.classical_.score_array(features)}

    @property
    def backbone(self) -> str:
        return self.encoder_.backbone

    @property
    def epochs(self) -> int:
        return self.encoder_.epochs


def _pyod(name: str, model: str, config: type, doc: str) -> type:
    """A PyOD detector class: its config and PyOD's "module:Class" are all that differ."""
    return type(name, (PyODDetector,), {"Config": config, "pyod_model": model, "__doc__": doc,
                                        "__module__": __name__})


@dataclass(frozen=True)
class IForestConfig(PixelConfig):
    n_estimators: int = param(100, "number of trees", ge=1)


@dataclass(frozen=True)
class KNNConfig(PixelConfig):
    n_neighbors: int = param(5, "k", ge=1)
    method: Literal["largest", "mean", "median", "sum-squares"] = param(
        "largest", "distance to the k-th neighbour, or the mean / median of the k (PyOD's); "
                   "sum-squares: the sum of the squared distances to the k, DN2's official "
                   "score (its faiss IndexFlatL2)")


@dataclass(frozen=True)
class LOFConfig(PixelConfig):
    n_neighbors: int = param(20, "neighbourhood size", ge=1)


@dataclass(frozen=True)
class OCSVMConfig(PixelConfig):
    kernel: Literal["rbf", "linear", "poly", "sigmoid"] = param("rbf", "kernel")
    nu: float = param(0.1, "upper bound on the fraction of training outliers", gt=0, le=1)
    gamma: Literal["scale", "auto"] | float = param(
        "scale", "kernel coefficient: scale, auto or a number", gt=0)


@dataclass(frozen=True)
class KDEConfig(PixelConfig):
    bandwidth: float = param(1.0, "kernel bandwidth", gt=0)


OCSVM = _pyod("OCSVM", "ocsvm:OCSVM", OCSVMConfig, "One-class SVM (Schoelkopf et al. 2001).")
IForest = _pyod("IForest", "iforest:IForest", IForestConfig, "Isolation Forest (Liu et al. 2008).")
class KNN(PyODDetector):
    """k-nearest-neighbour distance (Ramaswamy et al. 2000)."""

    Config = KNNConfig
    pyod_model = "knn:KNN"

    def fit_array(self, x: np.ndarray, seed: int) -> KNN:
        if self.config.method != "sum-squares":
            return super().fit_array(x, seed)
        self.pca_ = None  # DN2's score: the training rows themselves are the bank
        if self.config.pca_components > 0:
            return super().fit_array(x, seed)._keep_bank(x)
        self.bank_ = torch.as_tensor(x, dtype=torch.float64)
        return self

    def _keep_bank(self, x: np.ndarray) -> KNN:
        self.bank_ = torch.as_tensor(self.pca_.transform(x), dtype=torch.float64)
        return self

    def _params(self, n_features: int) -> dict[str, Any]:
        params = super()._params(n_features)
        if params.get("method") == "sum-squares":  # PCA is fitted by the parent; not PyOD's
            params["method"] = "largest"
        return params

    def score_array(self, x: np.ndarray) -> np.ndarray:
        if self.config.method != "sum-squares":
            return super().score_array(x)
        from bench.nn.scoring import knn_sum_of_squares

        if self.pca_ is not None:
            x = self.pca_.transform(x)
        return knn_sum_of_squares(torch.as_tensor(x, dtype=torch.float64), self.bank_,
                                  self.config.n_neighbors).double().numpy()
LOF = _pyod("LOF", "lof:LOF", LOFConfig, "Local outlier factor (Breunig et al. 2000).")
ECOD = _pyod("ECOD", "ecod:ECOD", PixelConfig, "Empirical-CDF outlier detection (Li et al. 2022).")
COPOD = _pyod("COPOD", "copod:COPOD", PixelConfig, "Copula-based outlier detection (Li et al. 2020).")


class ExactGaussianKDE:
    """PyOD's KDE scores (``-log p(x)`` of sklearn's Gaussian ``KernelDensity``, minkowski p=2,
    exact) computed by brute force: pairwise squared distances by matrix product and a
    log-sum-exp, in chunks of queries. sklearn walks a KD-tree instead, which prunes nothing on
    images and is inexact where all kernel values are tiny (scikit-learn issues 7492, 25799):
    on one quick Fashion-MNIST class it took 133 s against 3 s here (docs/performance.md)."""

    CHUNK = 2048  # query rows per block: 2048 x n_train float64 distances at a time

    def __init__(self, bandwidth: float = 1.0):
        self.bandwidth = bandwidth

    def fit(self, x: np.ndarray) -> ExactGaussianKDE:
        self.train_ = np.asarray(x, dtype=np.float64)
        self.train_sq_ = np.einsum("ij,ij->i", self.train_, self.train_)
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        from scipy.special import logsumexp

        x = np.asarray(x, dtype=np.float64)
        n, d = self.train_.shape
        h = self.bandwidth
        log_norm = -0.5 * d * np.log(2 * np.pi) - d * np.log(h) - np.log(n)
        out = np.empty(len(x))
        for start in range(0, len(x), self.CHUNK):
            q = x[start:start + self.CHUNK]
            sq = np.einsum("ij,ij->i", q, q)[:, None] + self.train_sq_[None, :] - 2 * q @ self.train_.T
            np.maximum(sq, 0.0, out=sq)  # rounding can make a zero distance slightly negative
            out[start:start + len(q)] = logsumexp(-sq / (2 * h * h), axis=1) + log_norm
        return -out


class KDE(PyODDetector):
    """Kernel density estimate: PyOD's KDE scores, computed exactly by `ExactGaussianKDE`."""

    Config = KDEConfig

    def _model_class(self) -> type:
        return ExactGaussianKDE


@dataclass(frozen=True)
class PCAConfig(PixelConfig):
    n_components: int = param(0, "components kept (0: PyOD's default, all)", ge=0)


class PCA(PyODDetector):
    """PCA reconstruction error (Shyu et al. 2003)."""

    Config = PCAConfig
    pyod_model = "pca:PCA"

    def _params(self, n_features):
        return {"n_components": self.config.n_components or None}


@dataclass(frozen=True)
class DeepSVDDConfig(PixelConfig):
    epochs: int = param(150, "training epochs", ge=1)
    batch_size: int = param(32, "batch size", ge=1)
    hidden_neurons: tuple[int, ...] = param((64, 32), "widths of PyOD's MLP, e.g. 64,32", ge=1)


class DeepSVDD(PyODDetector):
    """Deep SVDD (Ruff et al. 2018), PyOD's MLP, on the CPU (PyOD does not take a device)."""

    Config = DeepSVDDConfig
    pyod_model = "deep_svdd:DeepSVDD"

    def _params(self, n_features):
        c = self.config
        return dict(n_features=n_features, epochs=c.epochs, batch_size=c.batch_size,
                    hidden_neurons=list(c.hidden_neurons), verbose=0)
