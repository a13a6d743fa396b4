"""The detector interface (PyOD / scikit-learn style); the context a fit runs in is
`bench.nn.context.FitContext`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from bench.config import Config
from bench.datasets import ImageSet
from bench.nn import posthoc
from bench.nn.context import FitContext


@dataclass(frozen=True)
class NoConfig(Config):
    """A detector without settings."""


class Detector:
    """``__init__`` stores a frozen config only; ``fit`` builds all state; ``score`` returns one
    array per score variant, higher = more anomalous."""

    Config: ClassVar[type] = NoConfig
    # what the method is (the registry asks here; figures and --features follow it):
    # classical (PyOD on pixels or features), self-supervised (its own network), labeled,
    # pretrained (ImageNet weights, fine-tuned on the normal images)
    kind: ClassVar[str] = ""
    in_default_run: ClassVar[bool] = True  # in `bench run` without --methods
    needs_labels: ClassVar[bool] = False  # runs only where class labels are given
    uses_labels: ClassVar[bool] = False  # runs with or without labels (and uses them if given)
    predicts_classes: ClassVar[bool] = False  # labeled methods report accuracy
    scores: ClassVar[tuple[str, ...]] = ()  # the score variants `score` returns
    # {score: ((config field, values), ...)}: the grid a table with validation lists searches
    # for one of its own scores (`tune`; OpenOOD's order, bench/tuning.py)
    score_sweeps: ClassVar[dict[str, tuple]] = {}

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

    @classmethod
    def declared_scores(cls, config: Any, labeled: bool) -> tuple[str, ...]:
        """Every score name `score` returns for `config` (labeled: trained with class labels,
        two classes or more); the suite checks each job's scores against it."""
        return tuple(cls.scores)

    def fit(self, train: ImageSet, ctx: FitContext) -> Detector:
        raise NotImplementedError

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def tune(self, id_images: torch.Tensor, ood_images: torch.Tensor) -> dict[str, Any]:
        """Choose the settings of the scores that have a search grid on validation images
        (in-distribution vs OOD), after `fit`; later `score` calls use them. Returns
        {score: `bench.tuning.Choice`}; a detector without a grid returns {}."""
        return {}

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


class PosthocScoring:
    """The post-hoc scores of a network (bench/nn/posthoc.py's table): every score whose needs
    the network's `outputs` meet is fitted on the training set and added to the method's own.
    A class sets `outputs` and writes `penultimate` (and `linear_head` if it offers a head)."""

    # what the network gives the post-hoc scores (bench/nn/posthoc.py NEEDS); the table's
    # scores whose needs these meet (and labels, in a labeled protocol) are added to its own
    outputs: ClassVar[frozenset[str]] = frozenset({"features"})

    @classmethod
    def posthoc_names(cls, labeled: bool, outputs: frozenset[str] | None = None
                      ) -> tuple[str, ...]:
        """The post-hoc scores this network adds (labeled: its training set has class labels,
        two classes or more; `outputs`: what it offers, default the class's); a score of its
        own of the same name wins."""
        offered = set(cls.outputs if outputs is None else outputs) | (
            {"labels"} if labeled else set())
        return posthoc.applicable(offered, exclude=cls.scores)

    @classmethod
    def declared_scores(cls, config: Any, labeled: bool) -> tuple[str, ...]:
        """Every score `score` returns for `config`: its own, then the post-hoc ones."""
        return tuple(cls.scores) + (cls.posthoc_names(labeled) if config.posthoc else ())

    def penultimate(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features of un-augmented uint8 `images`, [N, d] float32."""
        raise NotImplementedError

    def train_features(self, train: ImageSet) -> torch.Tensor:
        """The training set's penultimate features, computed once per fit context."""
        return self.ctx_.cached("posthoc-train", train.images,
                                lambda: {"features": self.penultimate(train.images)})["features"]

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W [C, d], b [C]) of the class logits on the penultimate features (networks whose
        `outputs` offer a head)."""
        raise NotImplementedError

    def posthoc_outputs(self, images: torch.Tensor) -> posthoc.Outputs:
        """Penultimate features of `images`, and the head and its logits where offered."""
        f = self.penultimate(images)
        if "head" not in self.outputs:
            return posthoc.Outputs(f)
        head = self.linear_head()
        return posthoc.Outputs(f, posthoc.linear(f, *head), head)

    def posthoc_fit_inputs(self, train: ImageSet) -> posthoc.FitInputs:
        """What the post-hoc fits read: the training set's features, labels (a labeled
        protocol), the head and its logits where offered."""
        feats = self.train_features(train)
        n = len(train.classes)
        head = self.linear_head() if "head" in self.outputs else None
        return posthoc.FitInputs(
            feats, train.labels.to(feats.device) if self.ctx_.labeled else None,
            n if self.ctx_.labeled else 1, posthoc.linear(feats, *head) if head else None, head)

    def fit_posthoc(self, train: ImageSet) -> None:
        """Fit each post-hoc score of the table whose needs this network meets (bank,
        Gaussians, thresholds) on the training set's outputs."""
        labeled = self.ctx_.labeled and len(train.classes) > 1
        self.posthoc_names_ = self.posthoc_names(labeled, self.outputs)
        self.posthoc_inputs_ = self.posthoc_fit_inputs(train)
        self.posthoc_configs_: dict[str, Any] = {}  # settings chosen on validation images
        self.posthoc_ = posthoc.fit_all(self.posthoc_names_, self.posthoc_inputs_, self.config)

    def posthoc_of(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The post-hoc scores of `images` (those fitted by `fit_posthoc`)."""
        return posthoc.score_all(self.posthoc_names_, self.posthoc_,
                                 self.posthoc_outputs(images), self.config,
                                 getattr(self, "posthoc_configs_", None))

    def tune_posthoc(self, id_images: torch.Tensor, ood_images: torch.Tensor) -> dict[str, Any]:
        """OpenOOD's search for each fitted post-hoc score with a grid (`bench/tuning.py`):
        the validation images' outputs computed once, each combination fitted (on the
        validation features where OpenOOD's fit reads them) and scored; the best one kept."""
        import dataclasses

        from bench.tuning import search, validation_auroc

        names = [n for n in self.posthoc_names_ if posthoc.POSTHOC[n].sweep]
        if not names:
            return {}
        id_out, ood_out = self.posthoc_outputs(id_images), self.posthoc_outputs(ood_images)
        on_validation = posthoc.FitInputs(id_out.features, None, 1, id_out.logits, id_out.head)
        chosen = {}
        for name in names:
            entry = posthoc.POSTHOC[name]
            inputs = on_validation if entry.fit_on_validation else self.posthoc_inputs_

            def fitted(combo, entry=entry, inputs=inputs):
                config = dataclasses.replace(self.config, **combo)
                return config, entry.fit(inputs, config) if entry.fit else None

            def auroc(combo, entry=entry, fitted=fitted):
                config, state = fitted(combo)
                return validation_auroc(posthoc.to_cpu(entry.score(id_out, state, config)),
                                        posthoc.to_cpu(entry.score(ood_out, state, config)))

            choice = search(entry.sweep, auroc)
            if choice.tuned:  # else the fit of the config's settings stays
                self.posthoc_configs_[name], self.posthoc_[name] = fitted(choice.settings)
            chosen[name] = choice
        return chosen


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy().astype(np.float64)


def undeclared(returned: Any, declared: tuple[str, ...]) -> str | None:
    """What is wrong when a detector's scores are not the ones it declares, or None."""
    extra = [n for n in returned if n not in declared]
    missing = [n for n in declared if n not in returned]
    if not extra and not missing:
        return None
    parts = [f"returned {', '.join(map(str, extra))} without declaring it" if extra else "",
             f"declared {', '.join(missing)} but did not return it" if missing else ""]
    return "; ".join(p for p in parts if p) + f" (declared: {', '.join(declared) or 'none'})"
