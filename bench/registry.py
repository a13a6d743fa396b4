"""One lazy registry from name to ``"module:object"``; importing happens on first use."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from bench.errors import unknown_name


class Registry:
    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries = dict(entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def check(self, name: str) -> None:
        """Raise a BenchError naming the closest valid names if `name` is not registered."""
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)

    def target(self, name: str) -> str:
        self.check(name)
        return self._entries[name]

    def load_object(self, name: str) -> Any:
        module, _, attr = self.target(name).partition(":")
        return getattr(importlib.import_module(module), attr)


METHODS = Registry("method", {
    # classical baselines on flattened pixels (PyOD)
    "ocsvm": "bench.methods.classical:OCSVM",
    "iforest": "bench.methods.classical:IForest",
    "knn": "bench.methods.classical:KNN",
    "lof": "bench.methods.classical:LOF",
    "pca": "bench.methods.classical:PCA",
    "ecod": "bench.methods.classical:ECOD",
    "copod": "bench.methods.classical:COPOD",
    "kde": "bench.methods.classical:KDE",
    "deepsvdd": "bench.methods.classical:DeepSVDD",
    # self-supervised
    "simclr": "bench.methods.simclr:SimCLR",
    "rotnet": "bench.methods.rotnet:RotNet",
    "csi": "bench.methods.csi:CSI",
    "mcl": "bench.methods.mcl:MCL",
    # labeled OOD baselines
    "ce": "bench.methods.supervised:CrossEntropy",
    "supclr": "bench.methods.supervised:SupCLR",
    "sup-csi": "bench.methods.supervised:SupCSI",
})

DATASETS = Registry("dataset", {
    "digits": "bench.datasets.embedded:load_digits16",
    "digits32": "bench.datasets.embedded:load_digits32",
    "synthetic": "bench.datasets.embedded:load_synthetic",
    "mnist": "bench.datasets.torchvision_sets:load_mnist",
    "fashion-mnist": "bench.datasets.torchvision_sets:load_fashion_mnist",
    "cifar10": "bench.datasets.torchvision_sets:load_cifar10",
    "cifar100": "bench.datasets.torchvision_sets:load_cifar100",
    "cifar100-fine": "bench.datasets.torchvision_sets:load_cifar100_fine",
    "svhn": "bench.datasets.torchvision_sets:load_svhn",
    "lsun_resize": "bench.datasets.folders:load_lsun_resize",
    "imagenet_resize": "bench.datasets.folders:load_imagenet_resize",
    "lsun_fix": "bench.datasets.folders:load_lsun_fix",
    "imagenet_fix": "bench.datasets.folders:load_imagenet_fix",
    "imagenet30": "bench.datasets.folders:load_imagenet30",
})

# OOD sets made from the in-distribution test split (never training sets)
GENERATED = Registry("generated OOD set", {
    "interp": "bench.datasets.generated:make_interp",
    "gaussian": "bench.datasets.generated:make_gaussian",
    "uniform": "bench.datasets.generated:make_uniform",
})

OOD_ONLY = {"lsun_resize", "imagenet_resize", "lsun_fix", "imagenet_fix"}
OFFLINE = {"digits", "digits32", "synthetic"}
