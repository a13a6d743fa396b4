"""The detector interface (PyOD / scikit-learn style) and the context a fit runs in."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from bench.datasets import ImageSet
from bench.nn.precision import FP32, Precision
from bench.store import atomic_torch_save, load_torch_file


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class FitContext:
    """Where and how a detector trains: device, precision, seed, its model folder, labels,
    progress, log."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    model_dir: Path | None = None
    labeled: bool = False
    progress: bool = True
    compile: bool = False  # torch.compile the network (in place: state_dict keys unchanged)
    precision: Precision = FP32
    log: Callable[[str], None] = _stderr
    on_epoch_end: Callable[[int], None] | None = None

    def cached(self, tag: str, images: torch.Tensor,
               compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Features of `images` under `tag`, kept in the model folder for later score-only runs.

        The file name carries the precision and device type the features were computed with
        (a bf16 bank is not an fp32 one); an unreadable file is computed again.
        """
        if self.model_dir is None:
            return compute()
        digest = hashlib.sha1(images.contiguous().cpu().numpy().tobytes()).hexdigest()[:12]
        how = f"{self.precision.name}-{self.device.type}"
        path = Path(self.model_dir) / f"features-{tag}-{how}-{digest}.pt"
        if path.exists():
            stored = load_torch_file(path)
            if isinstance(stored, dict) and stored and all(
                    isinstance(v, torch.Tensor) for v in stored.values()):
                return {k: v.to(self.device) for k, v in stored.items()}
            self.log(f"bench: warning: {path} is damaged; computing the features again")
        out = compute()
        atomic_torch_save({k: v.cpu() for k, v in out.items()}, path)
        return out


class Detector:
    """``__init__`` stores a frozen config only; ``fit`` builds all state; ``score`` returns one
    array per score variant, higher = more anomalous."""

    Config: ClassVar[type]
    needs_labels: ClassVar[bool] = False  # runs only where class labels are given
    uses_labels: ClassVar[bool] = False  # runs with or without labels (and uses them if given)
    predicts_classes: ClassVar[bool] = False  # labeled methods report accuracy

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def runs_in(cls, labeled: bool) -> bool:
        """Whether the method runs in a protocol with (or without) class labels."""
        return (cls.needs_labels or cls.uses_labels) if labeled else not cls.needs_labels

    def fit(self, train: ImageSet, ctx: FitContext) -> Detector:
        raise NotImplementedError

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Predicted class of each image (labeled methods only)."""
        raise NotImplementedError(f"{type(self).__name__} does not predict classes")

    @property
    def backbone(self) -> str:
        return str(getattr(self.config, "backbone", "pixels"))

    @property
    def epochs(self) -> int:
        return int(getattr(self.config, "epochs", 0))

    history: list[dict[str, float]] = []


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy().astype(np.float64)
