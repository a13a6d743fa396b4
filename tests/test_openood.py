"""OpenOOD v1.5's table on fake folders in its layout: image lists over images_classic, read as its
test preprocessor does; its FPR@95 convention; a CE run end to end with every post-hoc score."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.metrics import fpr_at_95_tpr, fpr_at_95_tpr_openood
from bench.registry import DATASETS, DatasetEntry

OOD = {"cifar100": (32, 32), "tin": (64, 64), "mnist": (28, 28), "svhn": (32, 32),
       "texture": (48, 80), "places365": (64, 64)}


def _fake_openood(root, n_test=40, n_ood=24, seed=0):
    """benchmark_imglist/cifar10/test_<set>.txt over images_classic/<set>/test/*.png."""
    rng = np.random.default_rng(seed)
    lists = root / "openood" / "benchmark_imglist" / "cifar10"
    lists.mkdir(parents=True)
    for name, (h, w) in {"cifar10": (32, 32), **OOD}.items():
        folder = root / "openood" / "images_classic" / name / "test"
        folder.mkdir(parents=True)
        lines = []
        n = n_test if name == "cifar10" else n_ood
        for i in range(n):
            label = i % 4 if name == "cifar10" else 0
            shift = 60 * label if name == "cifar10" else 0
            pixels = rng.integers(shift, shift + 60, (h, w, 3), dtype=np.uint8) \
                if name == "cifar10" else rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:04d}.png")
            lines.append(f"{name}/test/{i:04d}.png {label}" if name == "cifar10"
                         else f"{name}/test/{i:04d}.png {{'label': -1}}")
        (lists / f"test_{name}.txt").write_text("\n".join(lines) + "\n")
    return root


FAKE_CIFAR = '''
import torch
from bench.datasets import ImageSet

def load(split, source):
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    n = 160 if split == "train" else 40
    labels = torch.arange(n) % 4
    images = (torch.randint(0, 60, (n, 3, 32, 32), generator=g) + 60 * labels.view(-1, 1, 1, 1))
    return ImageSet(images.to(torch.uint8), labels, tuple("abcd"), "cifar10")
'''


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """CIFAR-10's name with 4 small classes (no download): the table needs its name."""
    from bench import datasets

    (tmp_path / "fake_cifar.py").write_text(FAKE_CIFAR)
    monkeypatch.syspath_prepend(str(tmp_path))
    real = DATASETS._entries["cifar10"]
    DATASETS.register("cifar10", DatasetEntry("fake_cifar:load", "download", "", 4))
    datasets._load_cached.cache_clear()
    yield
    DATASETS.register("cifar10", real)
    datasets._load_cached.cache_clear()


def _epochs(args, n):
    """The tiny network's flags with `n` epochs (a field is set once)."""
    return [f"epochs={n}" if a.startswith("epochs=") else a for a in args]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return (info.value.code, *capsys.readouterr())


def test_images_are_read_as_openoods_test_preprocessor(tmp_path):
    from torchvision import transforms

    from bench.datasets import openood

    _fake_openood(tmp_path)
    got = openood.load(tmp_path, "cifar10", "texture", 32)
    path = tmp_path / "openood" / "images_classic" / "texture" / "test" / "0003.png"
    ref = transforms.Compose([transforms.Resize(32, interpolation=transforms.InterpolationMode
                                                .BILINEAR), transforms.CenterCrop(32)])
    want = torch.from_numpy(np.array(ref(Image.open(path).convert("RGB")))).permute(2, 0, 1)
    assert got.images.shape == (24, 3, 32, 32) and torch.equal(got.images[3], want)
    test = openood.load(tmp_path, "cifar10", "cifar10", 32)
    assert test.labels.tolist()[:5] == [0, 1, 2, 3, 0]


def test_openoods_fpr95_is_the_fraction_of_normal_flagged_at_95_percent_of_anomalies():
    is_anomaly = np.r_[np.zeros(100), np.ones(100)].astype(bool)
    rng = np.random.default_rng(0)
    score = np.r_[rng.normal(0, 1, 100), rng.normal(1.5, 1, 100)]
    # OpenOOD's auc_and_fpr_recall, transcribed: OOD positive, conf = -score
    from sklearn import metrics
    fpr, tpr, _ = metrics.roc_curve(is_anomaly.astype(int), score)
    assert fpr_at_95_tpr_openood(is_anomaly, score) == fpr[np.argmax(tpr >= 0.95)]
    normal = np.sort(score[~is_anomaly])
    anomalies_caught = np.sort(score[is_anomaly])[int(0.05 * 100)]  # 95% of anomalies above
    assert fpr_at_95_tpr_openood(is_anomaly, score) == pytest.approx(
        np.mean(normal >= anomalies_caught))
    assert fpr_at_95_tpr_openood(is_anomaly, score) != fpr_at_95_tpr(is_anomaly, score)


def test_a_missing_openood_folder_says_where_its_archive_goes(tmp_path, capsys, fake_cifar10):
    code, _, err = run_cli(["run", "--protocol", "ood-labeled", "--datasets", "cifar10",
                            "--ood-table", "openood-v1.5", "--methods", "ce", "--data-dir",
                            tmp_path, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "benchmark_imglist" in err and "Jingkang50/OpenOOD" in err
    assert str(tmp_path / "openood") in err and not (tmp_path / "out").exists()
    code, _, err = run_cli(["run", "--protocol", "one-class", "--datasets", "digits",
                            "--ood-table", "openood-v1.5", "--methods", "knn", "--out",
                            tmp_path / "out"], capsys)
    assert code == 2 and "protocol one-class has no OOD sets" in err
    code, _, err = run_cli(["run", "--protocol", "ood", "--datasets", "digits",
                            "--ood-table", "openood-v1.5", "--methods", "knn", "--out",
                            tmp_path / "out"], capsys)
    assert code == 2 and "has no entry for digits" in err


@pytest.mark.slow
def test_ce_on_the_openood_table_end_to_end(tmp_path, capsys, fake_cifar10, tiny_network_args):
    _fake_openood(tmp_path)
    out = tmp_path / "run"
    code, stdout, err = run_cli(["run", "--protocol", "ood-labeled", "--datasets", "cifar10",
                                 "--ood-table", "openood-v1.5", "--methods", "ce",
                                 "--data-dir", tmp_path, "--out", out, *_epochs(tiny_network_args, 3)], capsys)
    assert code == 0, err
    rows = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert set(rows["ood_table"]) == {"openood-v1.5"}
    assert set(rows["ood_dataset"]) == set(OOD)
    assert set(rows["score"]) == {"msp", "odin", "deep-knn", "mahalanobis", "rmds", "energy",
                                  "maxlogit", "gen", "react", "ash-s", "ash-b", "vim", "she"}
    assert {"auroc", "fpr95", "fpr95_openood", "accuracy"} <= set(rows["metric"])
    assert (rows["n_test_normal"] == 40).all()
    board = pd.read_csv(out / "leaderboard" / "ood-labeled_cifar10_openood-v1.5_quick.csv")
    assert {"near", "far", "cifar100", "tin", "places365"} <= set(board.columns)
    assert "ood-labeled / cifar10 (openood-v1.5), quick preset" in stdout
    # the same networks score on the default table: one training for both
    code, _, err = run_cli(["run", "--protocol", "ood-labeled", "--datasets", "cifar10",
                            "--ood", "gaussian", "--methods", "ce", "--data-dir", tmp_path,
                            "--out", out, *_epochs(tiny_network_args, 3)], capsys)
    assert code == 0 and "using the trained model" in err


def test_compare_sets_ours_beside_openoods_numbers_only_for_rows_of_its_table():
    from bench.report.reference import compare, load_reference
    from bench.store import ROW_COLUMNS

    rows = []
    for table in ("openood-v1.5", "bench"):
        for seed in (0, 1):
            for ood, v in {"cifar100": 0.88, "tin": 0.90, "mnist": 0.95, "svhn": 0.93,
                           "texture": 0.91, "places365": 0.89}.items():
                row = dict.fromkeys(ROW_COLUMNS, "")
                row.update(method="ce", score="deep-knn", protocol="ood-labeled",
                           protocol_version="2", ood_table=table, dataset="cifar10",
                           normal_class="all", ood_dataset=ood, seed=seed, metric="auroc",
                           value=v + 0.01 * seed, preset="paper", config_hash="h",
                           job_id=f"ce-{table}-{seed}")
                rows.append(row)
    table = compare(pd.DataFrame(rows), load_reference(["ood-labeled_cifar10_openood-v1.5"]))
    knn = table[table["ours"] == "ce/deep-knn"].set_index("cell")
    assert set(knn["ood_table"]) == {"openood-v1.5"} and set(knn.index) == {"near", "far"}
    assert knn.loc["near", "ours_mean"] == pytest.approx((0.88 + 0.90) / 2 + 0.005)
    assert knn.loc["near", "published"] == pytest.approx(0.9064)
    assert knn.loc["far", "published"] == pytest.approx(0.9296)
    assert knn.loc["near", "seeds"] == 2


@pytest.mark.slow
def test_an_openood_classifier_scored_on_its_table(tmp_path, capsys, fake_cifar10):
    """An OpenOOD v1.5 ResNet18_32x32 checkpoint, imported into ce: no training, its input
    normalisation, every post-hoc score."""
    from test_imports import ResNet18_32

    _fake_openood(tmp_path, n_test=40, n_ood=8)
    ckpt = tmp_path / "best.ckpt"
    torch.save(ResNet18_32(num_classes=4).state_dict(), ckpt)
    out = tmp_path / "run"
    code, _, err = run_cli(["run", "--protocol", "ood-labeled", "--datasets", "cifar10",
                            "--ood-table", "openood-v1.5", "--methods", "ce", "--data-dir",
                            tmp_path, "--out", out, "--checkpoint", ckpt, "--preset", "paper"],
                           capsys)
    assert code == 0, err
    assert "using the network of" in err
    rows = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert set(rows["backbone"]) == {"resnet18"} and "vim" in set(rows["score"])
    import json
    record = json.loads(next((out / "jobs").glob("ce-*/record.json")).read_text())
    assert record["config"]["input_norm"] == "openood" and record["checkpoint"] == str(ckpt)
