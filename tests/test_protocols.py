import pytest
import torch

from bench.datasets import load_dataset
from bench.errors import BenchError
from bench.protocols import Task, load_task, ood_sets_for, tasks


def test_one_class_sizes_and_labels():
    task = Task("one-class", "digits", 3)
    data = load_task(task, None, False)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(data.train) == int((train.labels == 3).sum())
    assert (data.train.labels == 3).all()
    assert len(data.test) == len(test)
    assert torch.equal(data.test_is_anomaly, test.labels != 3)
    assert int((~data.test_is_anomaly).sum()) == int((test.labels == 3).sum())


def test_one_class_no_train_test_leakage():
    data = load_task(Task("one-class", "synthetic", 0), None, False)
    train_rows = {bytes(x.numpy().tobytes()) for x in data.train.images}
    assert not any(bytes(x.numpy().tobytes()) in train_rows for x in data.test.images)


def test_tasks_expand_classes():
    assert [t.normal_class for t in tasks("one-class", "digits", 10, None)] == list(range(10))
    assert [t.normal_class for t in tasks("one-class", "digits", 10, (2, 5))] == [2, 5]
    with pytest.raises(BenchError, match="classes 0..9"):
        tasks("one-class", "digits", 10, (12,))
    [ood_task] = tasks("ood", "digits", 10, None, ("gaussian",))
    assert ood_task.normal_class is None and ood_task.ood_sets == ("gaussian",)


def test_ood_lists():
    assert ood_sets_for("cifar10", None)[:2] == ("cifar100", "interp")
    assert set(ood_sets_for("cifar10", None)) >= {"svhn", "gaussian", "uniform"}
    assert ood_sets_for("digits", ("uniform",)) == ("uniform",)
    with pytest.raises(BenchError, match="unknown dataset 'nosuch'"):
        ood_sets_for("digits", ("nosuch",))
    with pytest.raises(BenchError, match="in-distribution set itself"):
        ood_sets_for("digits", ("digits",))


def test_near_and_far_groups():
    from bench.protocols import ood_group

    assert ood_group("cifar10", "cifar100") == "near" and ood_group("cifar10", "svhn") == "far"
    assert ood_group("fashion-mnist", "interp") == "near"
    assert ood_group("fashion-mnist", "mnist") == "far"
    assert ood_group("digits", "svhn") == "other"


def test_validation_protocol_holds_out_training_images_and_uses_its_own_ood_sets():
    from bench.protocols import VALIDATION_MAX, validation_split

    train = load_dataset("digits", "train")
    [task] = tasks("ood-val", "digits", 10, None, ood_sets_for("digits", None, "ood-val"))
    assert task.ood_sets == ("patches", "smooth-noise")
    data = load_task(task, None, False)
    keep, held = validation_split(train)
    assert len(data.test) == len(held) == min(VALIDATION_MAX, round(0.1 * len(train)))
    assert len(data.train) + len(data.test) == len(train)
    assert not set(keep.tolist()) & set(held.tolist())
    assert torch.equal(data.test.images, train.images[held])  # training images, not test ones
    assert set(data.ood) == {"patches", "smooth-noise"}
    for ood in data.ood.values():
        assert ood.images.shape == data.test.images.shape
    with pytest.raises(BenchError, match="a test OOD set of digits"):
        ood_sets_for("digits", ("interp",), "ood-val")


def test_patches_keep_the_pixels_and_shuffle_the_shapes():
    from bench.datasets.generated import make_patches, make_smooth_noise

    test = load_dataset("digits", "test")
    shuffled = make_patches(test)
    assert shuffled.images.shape == test.images.shape
    assert torch.equal(shuffled.images.flatten(1).sort(1).values,
                       test.images.flatten(1).sort(1).values)  # the same pixel values
    assert not torch.equal(shuffled.images, test.images)
    smooth = make_smooth_noise(test)
    assert smooth.images.shape == test.images.shape and smooth.images.dtype == torch.uint8


# --- a third OOD table is data plus a loader ----------------------------------------------------

def third_table_load(data_dir, in_distribution, name, size):
    """The digits test split as its own in-distribution images; 'bright' = inverted digits."""
    from bench.datasets import ImageSet

    test = load_dataset(in_distribution, "test")
    images = test.images if name == in_distribution else 255 - test.images[:100]
    labels = test.labels if name == in_distribution else test.labels[:100]
    return ImageSet(images, labels, test.classes, name)


def third_table_probe(data_dir, in_distribution, name):
    from bench.errors import DataMissingError

    if name == "absent":
        raise DataMissingError(name, f"{name}: not there")


def test_a_third_table_is_data_plus_a_loader(tmp_path, capsys, monkeypatch):
    import pandas as pd

    from bench.protocols import TABLES, OODBenchmark, OODTable
    from helpers import run_cli

    monkeypatch.setitem(TABLES, "third", OODBenchmark(
        "third", {"digits": OODTable(near=("bright",), far=("absent",), validation=())},
        loader="test_protocols:third_table_load", probe="test_protocols:third_table_probe",
        metrics=("fpr95_openood",), description="a test's own images"))
    code, _, err = run_cli(["run", "--protocol", "ood", "--ood-table", "third", "--methods",
                            "knn", "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    assert "skipping OOD set: absent" in err
    rows = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(rows["ood_table"]) == {"third"} and set(rows["ood_dataset"]) == {"bright"}
    assert "fpr95_openood" in set(rows["metric"])  # the table's metric convention
    assert (tmp_path / "run" / "leaderboard" / "ood_digits_third_quick.csv").is_file()
