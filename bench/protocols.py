"""Protocols as declarative tables: which split trains, which tests, which OOD sets, labels or not.

OpenOOD-style: a protocol is data, not a code path. `tasks()` expands a protocol and a data set into
Tasks; `load_task()` turns a Task into a training set and test groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.datasets import ImageSet, convert_images, load_dataset
from bench.errors import BenchError, DataMissingError, unknown_name
from bench.registry import DATASETS, GENERATED, OOD_ONLY


@dataclass(frozen=True)
class Protocol:
    name: str
    per_class: bool  # one task per normal class (train on that class only)
    labeled: bool  # class labels reach the method
    test: str  # "rest": anomalies are the other classes of the test split; "ood": OOD sets
    description: str


PROTOCOLS = {
    "one-class": Protocol(
        "one-class", per_class=True, labeled=False, test="rest",
        description="for each normal class c: train on the train split's images of c, test on "
                    "the whole test split, anomaly = label != c"),
    "ood": Protocol(
        "ood", per_class=False, labeled=False, test="ood",
        description="train on the whole train split without labels; test split vs each OOD set"),
    "ood-labeled": Protocol(
        "ood-labeled", per_class=False, labeled=True, test="ood",
        description="as ood, with class labels available to the method; also reports accuracy"),
}

FIX_AND_RESIZE = ("lsun_resize", "imagenet_resize", "lsun_fix", "imagenet_fix")

# In-distribution set -> its OOD sets (CSI / MCL tables); `--ood` overrides.
DEFAULT_OOD = {
    "cifar10": ("svhn", *FIX_AND_RESIZE, "cifar100", "interp"),
    "cifar100": ("svhn", *FIX_AND_RESIZE, "cifar10", "interp"),
    "cifar100-fine": ("svhn", *FIX_AND_RESIZE, "cifar10", "interp"),
    "svhn": ("cifar10", "cifar100", *FIX_AND_RESIZE, "interp"),
    "fashion-mnist": ("mnist", "digits", "gaussian", "uniform", "interp"),
    "mnist": ("fashion-mnist", "digits", "gaussian", "uniform", "interp"),
    "digits": ("gaussian", "uniform", "interp"),
    "digits32": ("gaussian", "uniform", "interp"),
    "synthetic": ("gaussian", "uniform", "interp"),
    "imagenet30": ("gaussian", "uniform", "interp"),
}


@dataclass(frozen=True)
class Task:
    protocol: str
    dataset: str
    normal_class: int | None  # one-class only
    ood_sets: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return "all" if self.normal_class is None else str(self.normal_class)


@dataclass
class TestGroup:
    """One evaluation: in-distribution test images vs anomalies (`name` is `rest` or an OOD set)."""

    name: str
    n_normal: int
    n_anomalous: int


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise unknown_name("protocol", name, PROTOCOLS)
    return PROTOCOLS[name]


def check_in_distribution(name: str) -> None:
    if name in GENERATED:
        raise BenchError(f"{name} is a generated OOD set; it cannot be a normal / in-distribution set")
    DATASETS.check(name)
    if name in OOD_ONLY:
        raise BenchError(f"{name} is an OOD test set with no training split; "
                         "it cannot be a normal / in-distribution set")


def check_ood_name(name: str) -> None:
    if name not in GENERATED and name not in DATASETS:
        raise unknown_name("OOD set", name, [*DATASETS, *GENERATED])


def ood_sets_for(dataset: str, override: tuple[str, ...] | None) -> tuple[str, ...]:
    if override:
        for name in override:
            check_ood_name(name)
        return tuple(override)
    if dataset not in DEFAULT_OOD:
        raise BenchError(f"no default OOD sets for {dataset}; name them with --ood")
    return DEFAULT_OOD[dataset]


def tasks(protocol: str, dataset: str, n_classes: int, classes: tuple[int, ...] | None,
          ood_sets: tuple[str, ...] = ()) -> list[Task]:
    proto = get_protocol(protocol)
    if proto.per_class:
        chosen = classes if classes is not None else tuple(range(n_classes))
        bad = [c for c in chosen if not 0 <= c < n_classes]
        if bad:
            raise BenchError(f"--classes {','.join(map(str, bad))}: {dataset} has classes "
                             f"0..{n_classes - 1}")
        return [Task(protocol, dataset, c) for c in chosen]
    return [Task(protocol, dataset, None, ood_sets)]


def load_ood_set(name: str, reference: ImageSet, data_dir, download: bool) -> ImageSet:
    """An OOD set converted to the in-distribution image size and channel count."""
    if name in GENERATED:
        return GENERATED.load_object(name)(reference)
    ood = load_dataset(name, "test", data_dir, download)
    c, h, w = reference.shape
    images = convert_images(ood.images, c, (h, w))
    return ImageSet(images, ood.labels, ood.classes, name)


def available_ood_sets(dataset: str, ood_sets: tuple[str, ...], data_dir, download: bool,
                       strict: bool) -> tuple[tuple[str, ...], dict[str, str]]:
    """The OOD sets that can be loaded, and {missing set: reason}; strict makes a miss an error."""
    reference = load_dataset(dataset, "test", data_dir, download)
    ok, missing = [], {}
    errors = []
    for name in ood_sets:
        try:
            load_ood_set(name, reference, data_dir, download)
            ok.append(name)
        except DataMissingError as exc:
            missing[name] = str(exc)
            errors.append(str(exc))
    if missing and strict:
        raise BenchError("; ".join(errors) + " (--strict: missing OOD sets are errors)")
    return tuple(ok), missing


@dataclass
class TaskData:
    train: ImageSet
    test: ImageSet  # in-distribution / whole test split
    test_is_anomaly: torch.Tensor | None  # one-class: label != c; OOD: None (all normal)
    ood: dict[str, ImageSet]


def load_task(task: Task, data_dir, download: bool) -> TaskData:
    train = load_dataset(task.dataset, "train", data_dir, download)
    test = load_dataset(task.dataset, "test", data_dir, download)
    proto = get_protocol(task.protocol)
    if proto.per_class:
        c = task.normal_class
        return TaskData(train.subset(train.labels == c), test, test.labels != c, {})
    ood = {name: load_ood_set(name, test, data_dir, download) for name in task.ood_sets}
    return TaskData(train, test, None, ood)
