import dataclasses

import numpy as np
import pytest

from bench.datasets import DataSource, load_dataset
from bench.datasets.torchvision_sets import DEBIAN_FASHION_MNIST
from bench.errors import BenchError, DataMissingError
from bench.methods.base import undeclared
from bench.nn.context import FitContext
from bench.protocols import OOD_TABLES
from bench.registry import DATASETS, KINDS, METHODS
from helpers import tiny


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_imports_fits_and_scores(name):
    cls = METHODS.load_object(name)
    labeled = cls.needs_labels
    train = load_dataset("synthetic", "train")
    if not labeled:
        train = train.subset(train.labels == 0)
    test = load_dataset("synthetic", "test")
    if name in {"deepsvdd"}:
        det = cls(cls.Config(epochs=2))
    elif cls.kind == "pretrained":  # random init: tests never download weights
        det = cls(cls.Config(arch="resnet18", weights="none", image_size=32, epochs=1))
    elif hasattr(cls.Config, "__dataclass_fields__") and "backbone" in cls.Config.__dataclass_fields__:
        det = tiny(name, epochs=1, ens_samples=1)
    else:
        det = cls()
    assert set(vars(det)) == {"config"}  # __init__ stores only the frozen config (sklearn)
    assert dataclasses.is_dataclass(det.config) and type(det.config).__dataclass_params__.frozen
    det.fit(train, FitContext(labeled=labeled, progress=False))
    scores = det.score(test.images)
    assert scores
    # what it returns is what it declares (names, order aside)
    assert undeclared(scores, cls.declared_scores(det.config, labeled)) is None
    assert len(cls.declared_scores(det.config, labeled)) == len(scores)
    for values in scores.values():
        assert values.shape == (len(test),) and np.isfinite(values).all()
    if det.predicts_classes and labeled:
        assert det.predict_class(test.images).shape == (len(test),)


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_entry_resolves(name, tmp_path):
    """Each entry's loader exists; a set with files, probed in an empty folder offline, says it
    is missing and where its files go; an embedded set loads."""
    entry = DATASETS.entry(name)
    assert callable(DATASETS.load_object(name)) and entry.kind in KINDS
    source = DataSource(tmp_path, download=False)
    if entry.probe and not (name == "fashion-mnist" and DEBIAN_FASHION_MNIST.is_dir()):
        with pytest.raises(DataMissingError) as info:
            entry.check_files(name, "test", source)
        assert str(tmp_path) in str(info.value) and info.value.dataset == name
    elif entry.kind == "embedded":
        assert len(DATASETS.load_object(name)("test", source)) > 0


def test_every_ood_table_names_registered_sets_near_and_far_apart():
    for dataset, table in OOD_TABLES.items():
        assert DATASETS.entry(dataset).trainable
        assert not set(table.near) & set(table.far)
        assert dataset not in table.all
        for name in table.all:
            DATASETS.check(name)


def test_unknown_name_suggests():
    with pytest.raises(BenchError, match="did you mean 'mcl'"):
        METHODS.check("mlc")
    with pytest.raises(BenchError, match="fashion-mnist"):
        DATASETS.check("fashion_mnist")
