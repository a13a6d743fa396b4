import numpy as np
import pytest

from bench.datasets import load_dataset
from bench.errors import BenchError
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
    elif hasattr(cls.Config, "__dataclass_fields__") and "backbone" in cls.Config.__dataclass_fields__:
        det = tiny(name, epochs=1, ens_samples=1)
    else:
        det = cls()
    assert det.config == det.config  # __init__ stores only the frozen config
    det.fit(train, FitContext(labeled=labeled, progress=False))
    scores = det.score(test.images)
    assert scores
    for values in scores.values():
        assert values.shape == (len(test),) and np.isfinite(values).all()
    if det.predicts_classes and labeled:
        assert det.predict_class(test.images).shape == (len(test),)


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_entry_resolves(name):
    entry = DATASETS.entry(name)
    assert callable(DATASETS.load_object(name)) and entry.kind in KINDS
    if entry.probe:
        entry.check_files  # noqa: B018
        from bench.registry import _load

        assert callable(_load(entry.probe))


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
