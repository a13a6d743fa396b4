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


def _fake_openood(root, n_test=40, n_ood=24, seed=0, n_val=20):
    """benchmark_imglist/cifar10/<test|val>_<set>.txt over images_classic/<set>/<split>/*.png:
    every test set, and the validation lists its evaluator tunes on (cifar10, tin)."""
    rng = np.random.default_rng(seed)
    lists = root / "openood" / "benchmark_imglist" / "cifar10"
    lists.mkdir(parents=True)
    sets = [("test", name, size) for name, size in {"cifar10": (32, 32), **OOD}.items()]
    sets += [("val", "cifar10", (32, 32)), ("val", "tin", (64, 64))] if n_val else []
    for split, name, (h, w) in sets:
        folder = root / "openood" / "images_classic" / name / split
        folder.mkdir(parents=True)
        lines = []
        n = (n_test if name == "cifar10" else n_ood) if split == "test" else n_val
        for i in range(n):
            label = i % 4 if name == "cifar10" else 0
            shift = 60 * label if name == "cifar10" else 0
            pixels = rng.integers(shift, shift + 60, (h, w, 3), dtype=np.uint8) \
                if name == "cifar10" else rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:04d}.png")
            lines.append(f"{name}/{split}/{i:04d}.png {label}" if name == "cifar10"
                         else f"{name}/{split}/{i:04d}.png {{'label': -1}}")
        (lists / f"{split}_{name}.txt").write_text("\n".join(lines) + "\n")
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
    # settings chosen on val_cifar10 vs val_tin, as OpenOOD's evaluator; recorded per row
    tuned = rows.groupby("score")[["tuning", "setting"]].first()
    for score in ("odin", "deep-knn", "gen", "react", "ash-s", "ash-b"):
        assert tuned.loc[score, "tuning"] == "openood-v1.5-val", score
    assert tuned.loc["deep-knn", "setting"] in {f"knn_k={k}" for k in (50, 100, 200, 500, 1000)}
    assert tuned.loc["odin", "setting"].startswith("odin_temperature=")
    for score in ("msp", "energy", "maxlogit", "mahalanobis", "rmds", "she", "vim"):
        assert tuned.loc[score, "tuning"] == "" and tuned.loc[score, "setting"] == "", score
    import json
    record = json.loads(next((out / "jobs").glob("ce-*/record.json")).read_text())
    assert len(record["tuned"]["gen"]["tried"]) == 42  # 16-d features take no ViM grid value
    assert "no combination" in record["tuned"]["vim"]["kept"]
    board = pd.read_csv(out / "leaderboard" / "ood-labeled_cifar10_openood-v1.5_quick.csv")
    assert {"near", "far", "cifar100", "tin", "places365"} <= set(board.columns)
    assert "ood-labeled / cifar10 (openood-v1.5), quick preset" in stdout
    # the same networks score on the default table: one training for both
    code, _, err = run_cli(["run", "--protocol", "ood-labeled", "--datasets", "cifar10",
                            "--ood", "gaussian", "--methods", "ce", "--data-dir", tmp_path,
                            "--out", out, *_epochs(tiny_network_args, 3)], capsys)
    assert code == 0 and "using the trained model" in err


def _openood_rows(score, tuning="", setting="", tables=("openood-v1.5", "bench"),
                  dataset="cifar10"):
    from bench.store import ROW_COLUMNS

    rows = []
    for table in tables:
        for seed in (0, 1):
            for ood, v in {"cifar100": 0.88, "tin": 0.90, "mnist": 0.95, "svhn": 0.93,
                           "texture": 0.91, "places365": 0.89}.items():
                row = dict.fromkeys(ROW_COLUMNS, "")
                row.update(method="ce", score=score, protocol="ood-labeled",
                           protocol_version="2", ood_table=table, dataset=dataset,
                           normal_class="all", ood_dataset=ood, seed=seed, metric="auroc",
                           value=v + 0.01 * seed, preset="paper", config_hash="h",
                           job_id=f"ce-{table}-{seed}", tuning=tuning,
                           setting=setting.format(seed=seed))
                rows.append(row)
    return rows


def test_compare_sets_ours_beside_openoods_numbers_only_for_rows_of_its_table():
    from bench.reporting.reference import compare, format_comparison, load_reference

    rows = _openood_rows("deep-knn", "openood-v1.5-val", "knn_k={seed}00")
    rows += _openood_rows("msp")
    table = compare(pd.DataFrame(rows), load_reference(["ood-labeled_cifar10_openood-v1.5"]))
    knn = table[table["ours"] == "ce/deep-knn"].set_index("cell")
    assert set(knn["ood_table"]) == {"openood-v1.5"} and set(knn.index) == {"near", "far"}
    assert knn.loc["near", "ours_mean"] == pytest.approx((0.88 + 0.90) / 2 + 0.005)
    assert knn.loc["near", "published"] == pytest.approx(0.9064)
    assert knn.loc["far", "published"] == pytest.approx(0.9296)
    assert knn.loc["near", "seeds"] == 2
    assert knn.loc["near", "setting"] == "tuned" and knn.loc["near", "ours_setting"] == (
        "knn_k=000; knn_k=100")
    msp = table[table["ours"] == "ce/msp"]
    assert set(msp["setting"]) == {"fixed"} and len(msp) == 2
    assert "settings tuned, ours chose knn_k=000; knn_k=100" in format_comparison(table)


def test_compare_pairs_tuned_with_tuned_and_fixed_with_fixed_only():
    from bench.reporting.reference import compare, format_comparison, load_reference

    reference = load_reference(["ood-labeled_cifar10_openood-v1.5"])
    # OpenOOD's KNN was tuned on its validation lists: ours with the fixed k = 50 is not compared
    fixed_knn = compare(pd.DataFrame(_openood_rows("deep-knn", tables=("openood-v1.5",))),
                        reference)
    assert fixed_knn.empty
    text = format_comparison(fixed_knn)
    assert "not like for like" in text and "KNN (OpenOOD v1.5) not compared with ours " \
        "ce/deep-knn" in text and "chosen on validation data, ours are fixed" in text
    # OpenOOD's MSP has no setting: a tuned row of ours (a plugin's msp, say) is not compared
    tuned_msp = compare(pd.DataFrame(_openood_rows("msp", "openood-v1.5-val", "t=1",
                                                   tables=("openood-v1.5",))), reference)
    assert tuned_msp.empty and "its settings are fixed" in tuned_msp.attrs["not_compared"][0]


def test_openoods_cifar100_is_the_100_class_set(tmp_path, capsys):
    from bench.reporting.reference import compare, load_reference

    reference = load_reference(["ood-labeled_cifar100-fine_openood-v1.5"])
    assert set(reference["dataset"]) == {"cifar100-fine"}
    # rows of the 20 super-classes are never set beside OpenOOD's 100-class numbers
    twenty = compare(pd.DataFrame(_openood_rows("msp", dataset="cifar100")), reference)
    assert twenty.empty
    hundred = compare(pd.DataFrame(_openood_rows("msp", dataset="cifar100-fine",
                                                 tables=("openood-v1.5",))), reference)
    assert set(hundred["cell"]) == {"near", "far"}
    code, _, err = run_cli(["run", "--protocol", "ood-labeled", "--datasets", "cifar100",
                            "--ood-table", "openood-v1.5", "--methods", "ce", "--out",
                            tmp_path / "out"], capsys)
    assert code == 2 and "use cifar100-fine" in err and "100 fine classes" in err
    assert not (tmp_path / "out").exists()


def test_cifar100_fine_reads_openoods_cifar100_lists(tmp_path):
    from bench.datasets import openood

    lists = tmp_path / "openood" / "benchmark_imglist" / "cifar100"
    lists.mkdir(parents=True)
    folder = tmp_path / "openood" / "images_classic" / "cifar100" / "val"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), i, np.uint8)).save(folder / f"{i}.png")
    (lists / "val_cifar100.txt").write_text("cifar100/val/0.png 97\ncifar100/val/1.png 3\n")
    got = openood.load(tmp_path, "cifar100-fine", "cifar100-fine", 32, "val")
    assert got.labels.tolist() == [97, 3] and got.images[1].max() == 1


def test_a_reference_table_with_an_unknown_setting_kind_is_refused(tmp_path):
    from bench.errors import BenchError
    from bench.reporting.reference import read_reference

    src = (tmp_path / "t.csv")
    from pathlib import Path

    text = (Path(__file__).parents[1] / "results" / "reference"
            / "ood-labeled_cifar10_openood-v1.5.csv").read_text()
    src.write_text(text.replace(",tuned\n", ",sometimes\n", 1))
    with pytest.raises(BenchError, match="column setting, line .*'sometimes'"):
        read_reference(src)


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


def test_a_set_of_a_searched_setting_is_refused_on_the_openood_table(tmp_path, capsys,
                                                                       fake_cifar10):
    _fake_openood(tmp_path, n_test=8, n_ood=4, n_val=4)
    for assignment in ("knn_k=200", "ce.odin_temperature=10"):
        code, _, err = run_cli(["run", "--protocol", "ood-labeled", "--datasets", "cifar10",
                                "--ood-table", "openood-v1.5", "--methods", "ce", "--data-dir",
                                tmp_path, "--out", tmp_path / "out", "--set", assignment], capsys)
        assert code == 2 and f"--set {assignment}: under --ood-table openood-v1.5" in err, err
        assert "chosen on the table's validation lists" in err
    assert not (tmp_path / "out").exists()


def test_missing_validation_lists_say_where_they_go(tmp_path, capsys, fake_cifar10):
    _fake_openood(tmp_path, n_test=8, n_ood=4, n_val=0)
    code, _, err = run_cli(["run", "--protocol", "ood-labeled", "--datasets", "cifar10",
                            "--ood-table", "openood-v1.5", "--methods", "ce", "--data-dir",
                            tmp_path, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "val_cifar10.txt not found" in err and "Jingkang50/OpenOOD" in err
