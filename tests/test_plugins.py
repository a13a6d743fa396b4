"""Your own detector, network and data set: by import path, entry point and Python API, with
the checks a bad plugin meets (one line, exit 2, nothing written)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-m", "bench"]

DETECTOR = '''
from dataclasses import dataclass

import numpy as np

import bench


@dataclass(frozen=True)
class DistanceConfig(bench.Config):
    power: float = bench.param(2.0, "exponent of the distance to the mean image", gt=0)


class MeanDistance(bench.Detector):
    """Distance of each image to the mean training image."""

    Config = DistanceConfig
    scores = ("dist",)

    def fit(self, train, ctx):
        self.mean_ = train.images.float().mean(0)
        return self

    def score(self, images):
        d = (images.float() - self.mean_).abs().pow(self.config.power).flatten(1).sum(1)
        return {"dist": d.double().numpy()}
'''

NETWORKS = '''
import torch
from torch import nn


class WithFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.fc = nn.Linear(6, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.fc(self.features(x))


class OpenOODStyle(WithFeatures):
    def forward(self, x, return_feature=False):
        f = self.body(x)
        return (self.fc(f), f) if return_feature else self.fc(f)


class FeaturesOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())

    def forward(self, x):
        return self.body(x)


class WrongShape(WithFeatures):
    def forward(self, x):
        return self.body(x)[:, :, None]


def build():
    torch.manual_seed(0)
    return WithFeatures()


def build_wrong():
    return WrongShape()
'''


def bench_cli(args, cwd, env=None, check=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    result = subprocess.run(BENCH + args, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-2000:])
    return result


@pytest.fixture
def plugin_dir(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "my_plugin.py").write_text(DETECTOR)
    (folder / "my_nets.py").write_text(NETWORKS)
    return folder


def test_plugin_by_import_path_from_the_cli_and_python_give_the_same_rows(plugin_dir):
    out = plugin_dir / "runs"
    bench_cli(["run", "--methods", "my_plugin:MeanDistance", "--datasets", "digits",
               "--classes", "0,1", "--workers", "2", "--out", str(out)], plugin_dir)
    cli_rows = pd.read_csv(out / "results.csv")
    assert set(cli_rows["method"]) == {"my_plugin:MeanDistance"}
    assert len(cli_rows["job_id"].unique()) == 2
    assert cli_rows["code_version"].str.contains("my_plugin:MeanDistance=sha256:").all()
    # the same plan from Python, in a fresh run directory: the same jobs and numbers
    script = textwrap.dedent(f"""
        import bench
        rows = bench.run(methods="my_plugin:MeanDistance", datasets="digits", classes=[0, 1],
                         out={str(plugin_dir / 'py')!r})
        rows.to_csv({str(plugin_dir / 'py.csv')!r}, index=False)
    """)
    subprocess.run([sys.executable, "-c", script], cwd=plugin_dir, check=True, timeout=600,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)
    py_rows = pd.read_csv(plugin_dir / "py.csv")
    key = ["job_id", "score", "ood_dataset", "metric"]
    merged = cli_rows.merge(py_rows, on=key, suffixes=("_cli", "_py"))
    assert len(merged) == len(cli_rows) == len(py_rows)
    assert (merged["value_cli"] == merged["value_py"]).all()


def test_a_changed_plugin_file_never_shares_a_job(plugin_dir):
    args = ["run", "--methods", "my_plugin:MeanDistance", "--classes", "0", "--out", "runs"]
    bench_cli(args, plugin_dir)
    (plugin_dir / "my_plugin.py").write_text(DETECTOR + "\n# a new version\n")
    bench_cli(args, plugin_dir)
    assert len(list((plugin_dir / "runs" / "jobs").iterdir())) == 2


def test_an_entry_point_plugin_is_listed_and_runs(tmp_path):
    """An installed distribution (its dist-info on the path) declaring the example package."""
    site = tmp_path / "site"
    site.mkdir()
    package = ROOT / "examples" / "plugin_detector" / "bench_example_plugin"
    (site / "bench_example_plugin").symlink_to(package)
    info = site / "bench_example_plugin-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-example-plugin\n"
                                   "Version: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[mcl_bench.methods]\nmean-distance = bench_example_plugin:MeanDistance\n"
        "tiny-rotation = bench_example_plugin:TinyRotation\n")
    (info / "top_level.txt").write_text("bench_example_plugin\n")
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}
    listed = bench_cli(["list", "methods"], tmp_path, env).stdout
    line = next(x for x in listed.splitlines() if x.startswith("mean-distance"))
    assert "[plugin: entry point of bench-example-plugin 0.1.0" in line
    fields = bench_cli(["list", "fields", "mean-distance"], tmp_path, env).stdout
    assert "power" in fields and "exponent" in fields
    bench_cli(["run", "--methods", "mean-distance,tiny-rotation", "--classes", "0",
               "--set", "epochs=1", "--set", "backbone=resnet-tiny", "--set",
               "mean-distance.power=1", "--out", "runs"], tmp_path, env)
    rows = pd.read_csv(tmp_path / "runs" / "results.csv")
    assert set(rows["method"]) == {"mean-distance", "tiny-rotation"}
    assert set(rows[rows["method"] == "tiny-rotation"]["score"]) == {"deep-knn", "mahalanobis"}
    assert rows["code_version"].str.contains("bench-example-plugin 0.1.0").all()


BAD_PLUGINS = {
    "no_such_module:Thing": "cannot import no_such_module",
    "bad_plugins:NotADetector": "is not a detector",
    "bad_plugins:NoHelp": "config field k has no help",
    "bad_plugins:NoRange": "config field k has no range",
    "bad_plugins:Undeclared": "returned other without declaring it",
    "bad_plugins:Missing": "does not define score",
    "my_nets:build_wrong": "logits of shape (4, 6, 1), expected [4, classes]",
}

BAD = '''
from dataclasses import dataclass, field

import numpy as np

import bench


class NotADetector:
    def fit(self, train, ctx):
        return self


@dataclass(frozen=True)
class NoHelpConfig(bench.Config):
    k: int = 3


@dataclass(frozen=True)
class NoRangeConfig(bench.Config):
    k: int = bench.param(3, "neighbours")


class Base(bench.Detector):
    scores = ("mine",)

    def fit(self, train, ctx):
        return self

    def score(self, images):
        return {"mine": np.zeros(len(images))}


class NoHelp(Base):
    Config = NoHelpConfig


class NoRange(Base):
    Config = NoRangeConfig


class Undeclared(Base):
    def score(self, images):
        return {"mine": np.zeros(len(images)), "other": np.zeros(len(images))}


class Missing(bench.Detector):
    scores = ("mine",)

    def fit(self, train, ctx):
        return self
'''


@pytest.mark.parametrize("target", list(BAD_PLUGINS))
def test_a_bad_plugin_gets_one_line_and_exit_2(plugin_dir, target):
    (plugin_dir / "bad_plugins.py").write_text(BAD)
    result = bench_cli(["run", "--methods", target, "--classes", "0", "--out", "runs"],
                       plugin_dir, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: ")
    assert target.split(":")[0] in lines[0] and BAD_PLUGINS[target] in lines[0]
    assert not (plugin_dir / "runs").exists()  # nothing written


def test_a_network_by_import_path_gets_every_post_hoc_score(plugin_dir):
    bench_cli(["run", "--network", "my_nets:build", "--protocol", "ood-labeled",
               "--out", "runs"], plugin_dir)
    rows = pd.read_csv(plugin_dir / "runs" / "results.csv")
    assert set(rows["method"]) == {"my_nets:build"}
    from bench.nn.posthoc import POSTHOC

    assert set(rows["score"]) == set(POSTHOC)  # features, logits and a verified head
    assert (rows[rows["metric"] == "accuracy"]["value"] >= 0).all()


def test_evaluate_takes_each_convention_and_checks_the_weights(plugin_dir, monkeypatch):
    import torch

    import bench
    from bench.nn.posthoc import POSTHOC

    monkeypatch.syspath_prepend(str(plugin_dir))
    import my_nets

    torch.manual_seed(0)
    rows = bench.evaluate(my_nets.OpenOODStyle(), "digits", out=plugin_dir / "a",
                          features="knn")
    net = rows[rows["method"] != "knn"]
    assert set(net["score"]) == set(POSTHOC)
    assert set(rows[rows["method"] == "knn"]["score"]) == {f"{net['method'].iloc[0]}-feat"}
    rows = bench.evaluate(my_nets.FeaturesOnly(), "digits", protocol="ood",
                          out=plugin_dir / "b")
    assert set(rows["score"]) == {"deep-knn", "mahalanobis"}
    with pytest.raises(bench.BenchError, match="logits of shape"):
        bench.evaluate(my_nets.WrongShape(), "digits", out=plugin_dir / "c")
    # a second evaluation of the same weights resumes: the same job ids, nothing new
    model = my_nets.FeaturesOnly()
    first = bench.evaluate(model, "digits", protocol="ood", out=plugin_dir / "d", name="net")
    again = bench.evaluate(model, "digits", protocol="ood", out=plugin_dir / "d", name="net")
    assert set(first["job_id"]) == set(again["job_id"])
    assert len(list((plugin_dir / "d" / "jobs").iterdir())) == 1


DATA = '''
import torch

from bench import ImageSet


def load(split):
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.arange(2).repeat(40)
    images = (torch.rand(80, 1, 8, 8, generator=g) * 80).to(torch.uint8)
    images[labels == 1] += 120  # class 1 is brighter
    return ImageSet(images, labels, ("dark", "bright"), "two-blobs")


def load_noise(split):
    g = torch.Generator().manual_seed(2)
    images = (torch.rand(30, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    return ImageSet(images, torch.zeros(30, dtype=torch.long), ("noise",), "noise")


def not_images(split):
    return [1, 2, 3]
'''


def test_a_data_set_plugin_runs_one_class_and_ood(plugin_dir):
    (plugin_dir / "my_data.py").write_text(DATA)
    bench_cli(["run", "--methods", "my_plugin:MeanDistance,knn", "--datasets", "my_data:load",
               "--out", "runs"], plugin_dir)
    rows = pd.read_csv(plugin_dir / "runs" / "results.csv", dtype={"normal_class": str})
    assert set(rows["dataset"]) == {"my_data:load"} and set(rows["normal_class"]) == {"0", "1"}
    bench_cli(["run", "--protocol", "ood", "--methods", "knn", "--datasets", "my_data:load",
               "--ood", "my_data:load_noise", "--out", "runs-ood"], plugin_dir)
    rows = pd.read_csv(plugin_dir / "runs-ood" / "results.csv")
    assert set(rows["ood_dataset"]) == {"my_data:load_noise"}
    bad = bench_cli(["run", "--methods", "knn", "--datasets", "my_data:not_images",
                     "--out", "bad"], plugin_dir, check=False)
    assert bad.returncode == 2 and "not a bench.ImageSet" in bad.stderr
    assert not (plugin_dir / "bad").exists()


def test_the_examples_run(tmp_path):
    """examples/own_network.py end to end on digits (the README's second example)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "own_network.py"), "--dataset", "digits",
         "--train-images", "300", "--epochs", "1", "--out", str(tmp_path / "runs")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "small-cnn/vim" in result.stdout and "knn/small-cnn-feat" in result.stdout


def test_a_new_post_hoc_score_is_one_table_row(tmp_path, capsys, monkeypatch):
    """A score added to POSTHOC (and nothing else) is listed, fitted and scored by every network
    whose outputs meet its needs, and checked as declared."""

    from bench.cli import main
    from bench.nn import posthoc

    row = posthoc.PosthocScore(
        frozenset({"features"}), lambda o, s, c: (o.features - s).norm(dim=1),
        lambda t, c: t.features.mean(0), (), "distance to the mean training feature")
    monkeypatch.setitem(posthoc.POSTHOC, "mean-distance", row)
    with pytest.raises(SystemExit):
        main(["list", "methods"])
    assert "mean-distance (features)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["run", "--methods", "rotnet", "--datasets", "synthetic", "--classes", "0",
              "--set", "backbone=resnet-tiny", "--set", "epochs=1", "--out",
              str(tmp_path / "run")])
    assert info.value.code == 0
    rows = pd.read_csv(tmp_path / "run" / "results.csv")
    assert "mean-distance" in set(rows["score"])


def test_bench_run_takes_a_detector_class_and_the_example_plugin(tmp_path, monkeypatch):
    """A class object passed to bench.run is named by its import path; the example package's
    classes run from Python as from the CLI."""
    import bench

    monkeypatch.syspath_prepend(str(ROOT / "examples" / "plugin_detector"))
    from bench_example_plugin import MeanDistance

    rows = bench.run(methods=[MeanDistance, "knn"], datasets="digits", classes=[0],
                     out=tmp_path / "run", set={"power": 1.0})
    assert set(rows["method"]) == {"bench_example_plugin:MeanDistance", "knn"}
    assert rows.attrs["failed"] == []
    with pytest.raises(bench.BenchError, match="neither a name nor a detector class"):
        bench.run(methods=[object()], out=tmp_path / "bad")


@pytest.mark.slow
def test_the_quickstart_notebook_runs(tmp_path, monkeypatch):
    """examples/quickstart.ipynb executes top to bottom: a first result, a leaderboard and a
    figure from Python."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel inherits it: its run dir goes there
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(Path(__file__).resolve().parents[1] / "examples" /
                             "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "")
                   for o in outputs)
    assert "('one-class', 'digits', 'quick', '')" in text and "knn/pixel" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_every_export_of_bench_stays_itself_after_its_submodules_load():
    """`bench.report` was the function until `bench.report.leaderboard` was imported (by
    `bench.read_rows`), then the subpackage: no export may share a submodule's name."""
    import importlib
    import pkgutil

    import bench

    for info in pkgutil.walk_packages(bench.__path__, "bench."):
        if not info.name.startswith("bench.__"):
            importlib.import_module(info.name)
    for name in bench.__all__:
        assert not isinstance(getattr(bench, name), type(bench)), name
