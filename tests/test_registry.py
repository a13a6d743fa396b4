import numpy as np
import pytest

from bench.datasets import load_dataset
from bench.errors import BenchError
from bench.methods.base import FitContext
from bench.protocols import DEFAULT_OOD, check_ood_name
from bench.registry import DATASETS, GENERATED, METHODS
from helpers import tiny


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_imports_fits_and_scores(name):
    cls = METHODS.load_object(name)
    labeled = "ood-labeled" in cls.protocols and "one-class" not in cls.protocols
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
        assert det.predict(test.images).shape == (len(test),)


@pytest.mark.parametrize("name", DATASETS.names() + GENERATED.names())
def test_every_dataset_entry_resolves(name):
    registry = GENERATED if name in GENERATED else DATASETS
    assert callable(registry.load_object(name))


def test_every_default_ood_list_resolves_to_registered_sets():
    for dataset, sets in DEFAULT_OOD.items():
        assert dataset in DATASETS
        for name in sets:
            check_ood_name(name)


def test_unknown_name_suggests():
    with pytest.raises(BenchError, match="did you mean 'mcl'"):
        METHODS.check("mlc")
    with pytest.raises(BenchError, match="fashion-mnist"):
        DATASETS.check("fashion_mnist")
