"""A new method costs one module and one registry entry: a throwaway self-supervised method and
a throwaway classical one, written in a temporary module, run end to end through `bench run`,
`bench leaderboard` and `bench figures`, and are drawn in their own panels."""

import sys
import textwrap

import pandas as pd
import pytest

from bench.cli import main
from bench.registry import METHODS

MODULE = '''
"""Throwaway methods for a test."""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import param
from bench.methods.base import to_numpy
from bench.methods.classical import PixelConfig, PyODDetector
from bench.methods.network import ClassifierConfig, NetworkDetector
from bench.nn.augment import to_float
from bench.nn.backbones import Network
from bench.nn.shifts import N_SHIFTS, all_rotations


@dataclass(frozen=True)
class FlipConfig(ClassifierConfig):
    epochs: int = 3
    margin: float = param(0.0, "added to the score (a field of its own)", ge=0)


class Flip(NetworkDetector):
    """Rotation classifier scored by its rotation-0 logit alone (a throwaway)."""

    Config = FlipConfig
    scores = ("zero",)

    def build_model(self, train):
        return Network(self.config.backbone, train.shape[0], n_shifts=N_SHIFTS)

    def training_loss(self, x, y):
        shifted, labels = all_rotations(to_float(x))
        return F.cross_entropy(self.model_(self.input(shifted))["shift_logits"].float(), labels)

    def method_scores(self, images):
        logits = self.forward(images, to_float, ("shift_logits",))["shift_logits"]
        return {"zero": -to_numpy(logits[:, 0]) + self.config.margin}


class Median(PyODDetector):
    """Median absolute deviation from the training median (a throwaway classical detector)."""

    Config = PixelConfig

    def _model_class(self):
        class MedianModel:
            def __init__(self, **kwargs):
                pass

            def fit(self, x):
                self.median_ = np.median(x, axis=0)
                return self

            def decision_function(self, x):
                return np.abs(x - self.median_).mean(axis=1)
        return MedianModel
'''


@pytest.fixture
def throwaway(tmp_path, monkeypatch):
    (tmp_path / "throwaway_methods.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    entries = dict(METHODS._entries)
    METHODS.register("flip", "throwaway_methods:Flip")  # the one registry line each
    METHODS.register("median", "throwaway_methods:Median")
    yield
    METHODS._entries.clear()
    METHODS._entries.update(entries)
    sys.modules.pop("throwaway_methods", None)


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return (info.value.code, *capsys.readouterr())


def test_a_new_method_is_one_module_and_one_registry_line(throwaway, tmp_path, capsys,
                                                          tiny_network_args, monkeypatch):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["run", "--methods", "flip,median,knn", "--datasets", "synthetic",
                                 "--out", out, *tiny_network_args, "--set", "flip.margin=0.5"],
                                capsys)
    assert code == 0, err
    assert "flip/zero [margin=0.5]" in stdout and "median/pixel" in stdout
    code, stdout, err = run_cli(["run", "--methods", "flip", "--datasets", "synthetic", "--out",
                                 out, *tiny_network_args, "--set", "flip.temperature=1"], capsys)
    assert code == 2 and "unknown --set field of flip 'temperature'" in err
    code, stdout, err = run_cli(["list", "methods"], capsys)
    assert "flip       self-supervised" in stdout and "median     classical" in stdout

    code, _, err = run_cli(["leaderboard", "--runs", out, "--out", tmp_path / "lb"], capsys)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "lb" / "one-class_synthetic_quick.csv")
    assert {"flip/zero [margin=0.5]", "median/pixel", "knn/pixel"} <= set(table["method/score"])

    from bench.reporting import figures

    panels = {}
    real = figures._per_class_panel

    def spy(ax, title, stats, chosen, *args):
        panels[title.split(" ")[0]] = set(chosen)
        return real(ax, title, stats, chosen, *args)

    monkeypatch.setattr(figures, "_per_class_panel", spy)
    code, stdout, err = run_cli(["figures", "--runs", out, "--out", tmp_path / "figs",
                                 "--figure", "per-class", "--figure", "jobs", "--no-tsne"],
                                capsys)
    assert code == 0, err
    flip = {f"flip/{s} [margin=0.5]" for s in ("zero", "deep-knn", "mahalanobis")}
    assert panels == {"self-supervised": flip, "classical": {"median/pixel", "knn/pixel"}}
    assert (tmp_path / "figs" / "auroc_per_class_synthetic_quick.png").exists()
    assert any(p.name.startswith("roc_flip-") for p in (tmp_path / "figs").iterdir())
