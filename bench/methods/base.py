"""The detector interface (PyOD / scikit-learn style); the context a fit runs in is
`bench.nn.context.FitContext`."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from bench.datasets import ImageSet
from bench.nn.context import FitContext


class Detector:
    """``__init__`` stores a frozen config only; ``fit`` builds all state; ``score`` returns one
    array per score variant, higher = more anomalous."""

    Config: ClassVar[type]
    # what the method is (the registry asks here; figures and --features follow it):
    # classical (PyOD on pixels or features), self-supervised (its own network), labeled,
    # pretrained (ImageNet weights, fine-tuned on the normal images)
    kind: ClassVar[str] = ""
    in_default_run: ClassVar[bool] = True  # in `bench run` without --methods
    needs_labels: ClassVar[bool] = False  # runs only where class labels are given
    uses_labels: ClassVar[bool] = False  # runs with or without labels (and uses them if given)
    predicts_classes: ClassVar[bool] = False  # labeled methods report accuracy
    scores: ClassVar[tuple[str, ...]] = ()  # the score variants `score` returns

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def skip(cls, protocol) -> str | None:
        """Why the method cannot run in `protocol` (a `bench.protocols.Protocol`), or None."""
        if protocol.labeled and not (cls.needs_labels or cls.uses_labels):
            return "it does not use class labels (its rows would be those of the unlabeled protocol)"
        if not protocol.labeled and cls.needs_labels:
            return "it trains with class labels (protocols ood-labeled, ood-labeled-val)"
        return None

    def fit(self, train: ImageSet, ctx: FitContext) -> Detector:
        raise NotImplementedError

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def predict_class(self, images: torch.Tensor) -> np.ndarray:
        """Predicted class of each image (labeled methods only; not sklearn's 0/1 `predict`)."""
        raise NotImplementedError(f"{type(self).__name__} does not predict classes")

    @property
    def backbone(self) -> str:
        return str(getattr(self.config, "backbone", "pixel"))

    @property
    def epochs(self) -> int:
        return int(getattr(self.config, "epochs", 0))

    history: list[dict[str, float]] = []


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy().astype(np.float64)
