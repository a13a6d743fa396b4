"""Choosing a score's settings on validation images, as OpenOOD v1.5's evaluator does.

OpenOOD's `Evaluator.hyperparam_search` tries every combination of a postprocessor's
`postprocessor_sweep` grid (its `recursive_generator` order: the last setting varies slowest),
scores its in-distribution validation images against its OOD validation images, and keeps the
first combination with the highest AUROC. `search` is that loop; a table that declares
validation lists (`bench/protocols.py`, `OODTable.tuning`) runs it in every job, and each row
records the setting chosen (`tuning`, `setting`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Sweep = tuple[tuple[str, tuple[Any, ...]], ...]


def grid(sweep: Sweep) -> list[dict[str, Any]]:
    """Every combination of a sweep in OpenOOD's order (`recursive_generator`: the first
    setting varies fastest, the last slowest)."""
    combos: list[dict[str, Any]] = [{}]
    for name, values in sweep:
        combos = [{**combo, name: value} for value in values for combo in combos]
    return combos


def setting_text(settings: dict[str, Any]) -> str:
    """``knn_k=200`` / ``gen_gamma=0.1,gen_m=100``: what a row's `setting` column holds."""
    return ",".join(f"{k}={_number(v)}" for k, v in settings.items())


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class Choice:
    """The settings kept, their validation AUROC, and every combination tried (AUROC, or why it
    was left out). No settings: no combination could be scored, the config's are kept (the
    score is then not tuned)."""

    settings: dict[str, Any]
    auroc: float
    tried: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tuned(self) -> bool:
        return bool(self.settings)

    def record(self) -> dict[str, Any]:
        out = {"setting": setting_text(self.settings), "tried": self.tried}
        if self.tuned:
            out["validation_auroc"] = self.auroc
        else:
            out["kept"] = "the config's settings: no combination of the grid fits this network"
        return out


class SettingOutOfRange(ValueError):
    """A setting the network cannot take (ViM's dimension at or above the features')."""


def search(sweep: Sweep, validation_auroc: Callable[[dict[str, Any]], float]) -> Choice:
    """The first combination of `sweep` with the highest validation AUROC (OpenOOD keeps the
    first of equals: a strictly higher AUROC replaces it). A combination that raises
    `SettingOutOfRange` or gives a score that is not finite is left out and recorded as such, where
    OpenOOD's search would stop on it; when none is usable, a Choice without settings."""
    best: dict[str, Any] | None = None
    best_auroc = -math.inf
    tried = []
    for combo in grid(sweep):
        try:
            value = float(validation_auroc(combo))
        except SettingOutOfRange as exc:
            tried.append({"setting": setting_text(combo), "left_out": str(exc)})
            continue
        if not np.isfinite(value):
            tried.append({"setting": setting_text(combo), "left_out": "scores not finite"})
            continue
        tried.append({"setting": setting_text(combo), "validation_auroc": value})
        if value > best_auroc:
            best, best_auroc = combo, value
    if best is None:
        return Choice({}, math.nan, tried)
    return Choice(best, best_auroc, tried)


def validation_auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """AUROC of OOD (positive) against in-distribution validation scores; NaN when a score is
    not finite (the combination is then left out)."""
    from bench.metrics import auroc

    scores = np.concatenate([np.asarray(id_scores, float), np.asarray(ood_scores, float)])
    if not np.isfinite(scores).all():
        return math.nan
    is_anomaly = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))].astype(bool)
    return auroc(is_anomaly, scores)
