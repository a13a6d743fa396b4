import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from bench.cli import main
from bench.store import ROW_COLUMNS

BENCH = [sys.executable, "-m", "bench"]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.slow
def test_run_end_to_end_on_synthetic_and_skip_on_rerun(tmp_path, tiny_args):
    out = tmp_path / "runs"
    args = ["run", "--methods", "knn,mcl", "--datasets", "synthetic", "--classes", "0,1",
            "--out", str(out), *tiny_args]
    proc = subprocess.run(BENCH + args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "one-class / synthetic" in proc.stdout and "mcl/sei" in proc.stdout
    rows = pd.read_csv(out / "results.csv")
    assert list(rows.columns) == ROW_COLUMNS
    # knn: 1 score; mcl: sei, cosnorm and the post-hoc deep-knn, mahalanobis (rmds needs two
    # classes); 2 normal classes; 4 metrics each
    assert set(zip(rows["method"], rows["score"])) == {
        ("knn", "pixel"), ("mcl", "sei"), ("mcl", "cosnorm"), ("mcl", "deep-knn"),
        ("mcl", "mahalanobis")}
    assert len(rows) == (1 + 4) * 2 * 4
    assert set(rows["metric"]) == {"auroc", "aupr_in", "aupr_out", "fpr95"}
    assert rows["value"].between(0, 1).all()
    assert set(rows["ood_dataset"]) == {"rest"} and set(rows["protocol"]) == {"one-class"}

    jobs = sorted((out / "jobs").iterdir())
    assert len(jobs) == 4
    before = {p: p.stat().st_mtime_ns for job in jobs for p in job.iterdir()}
    again = subprocess.run(BENCH + args, capture_output=True, text=True)
    assert again.returncode == 0
    assert "4 of 4 jobs already in" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert pd.read_csv(out / "results.csv").equals(rows)


def test_failed_job_is_recorded_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    from bench.methods.classical import IForest

    def broken_fit(self, x, seed):
        raise ValueError("the detector could not fit")

    monkeypatch.setattr(IForest, "fit_array", broken_fit)
    out = tmp_path / "runs"
    code, stdout, err = run_cli(["run", "--methods", "knn,iforest", "--datasets", "synthetic",
                                 "--classes", "0", "--out", str(out)], capsys)
    assert code == 1
    assert "1 of 2 jobs failed" in err
    records = [json.loads((d / "record.json").read_text()) for d in (out / "jobs").iterdir()]
    status = {r["method"]: r for r in records}
    assert status["knn"]["status"] == "done"
    assert status["iforest"]["status"] == "failed"
    assert "ValueError: the detector could not fit" in status["iforest"]["error"]
    assert set(pd.read_csv(out / "results.csv")["method"]) == {"knn"}


@pytest.mark.parametrize("args,message", [
    (["--methods", "mlc"], "unknown method 'mlc'; did you mean 'mcl'"),
    (["--datasets", "cifar1O"], "unknown dataset 'cifar1O'; did you mean 'cifar10'"),
    (["--protocol", "one_class"], "unknown protocol 'one_class'; did you mean 'one-class'"),
    (["--preset", "papr"], "unknown preset 'papr'; did you mean 'paper'"),
    (["--set", "knn.n_neighbors"], "expected key=value"),
    (["--set", "knn.n_neighbours=3"], "did you mean 'n_neighbors'"),
    (["--set", "knn.n_neighbors=three"], "knn.n_neighbors=three: expected int"),
    (["--set", "mcl.optimizer=lamb", "--methods", "mcl"], "expected one of 'sgd', 'lars', 'adam'"),
    (["--classes", "0,12"], "has classes 0..3"),
    (["--seeds", "a"], "--seeds 'a': expected integers"),
    (["--datasets", "interp"], "generated OOD set"),
    (["--methods", "ce"], "method ce does not run in protocol one-class"),
    (["--methods", "rotnet", "--set", "rotnet.temperature=0.1"],
     "unknown --set field of rotnet 'temperature'; valid: backbone,"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "runs"
    base = ["run", "--methods", "knn", "--datasets", "synthetic", "--out", str(out)]
    code, stdout, err = run_cli(base + args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: ")
    assert message in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("args,message", [
    (["--out", "/proc/bench-test"], "not writable"),
    (["--out", "/sys/bench-test"], "not writable"),
    (["--device", "tpu"], "--device 'tpu': expected auto, cpu, cuda or cuda:N"),
    (["--methods", ","], "--methods ',': no names given"),
    (["--classes", "5-2"], "--classes '5-2': the range is empty"),
    (["--seeds", ","], "--seeds ',': no names given"),
    (["--seeds", "-1"], "expected"),
    (["--set", "epochs=-3", "--methods", "mcl"], "epochs=-3 is out of range (must be >= 1)"),
    (["--set", "epochs=0", "--methods", "mcl"], "must be >= 1"),
    (["--set", "batch_size=-5", "--methods", "mcl"], "must be >= 1"),
    (["--set", "batch_size=0", "--methods", "mcl"], "must be >= 1"),
    (["--set", "lr=-1", "--methods", "mcl"], "must be > 0"),
    (["--set", "mcl.temperature=0", "--methods", "mcl"], "must be > 0"),
    (["--features", "knn"], "--features knn: features come from a method with a network"),
    (["--precision", "fp8"], "Invalid value for '--precision'"),
])
def test_nonsense_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch, args,
                                                         message):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    base = ["run", "--methods", "knn", "--datasets", "synthetic", "--out", str(out)]
    code, _, err = run_cli(base + args, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("bench: error: "), err
    assert message in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_empty_out_writes_nothing_anywhere(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["run", "--methods", "knn", "--datasets", "synthetic", "--out", ""],
                           capsys)
    assert code == 2 and "--out is empty" in err and list(tmp_path.iterdir()) == []


def test_cuda_without_cuda_is_refused_before_any_job(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(["run", "--methods", "knn", "--datasets", "synthetic", "--device",
                            "cuda", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "no CUDA device is visible" in err and not (tmp_path / "r").exists()


def test_options_that_do_not_apply_get_a_warning(tmp_path, capsys):
    code, _, err = run_cli(["run", "--protocol", "ood", "--methods", "knn", "--datasets",
                            "synthetic", "--ood", "uniform", "--classes", "0",
                            "--out", str(tmp_path / "r")], capsys)
    assert code == 0 and "--classes does not apply to protocol ood" in err


def test_a_non_image_file_in_a_folder_set_is_one_line(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "data" / "LSUN_resize"
    folder.mkdir(parents=True)
    Image.new("RGB", (32, 32), (10, 20, 30)).save(folder / "good.png")
    (folder / "bad.png").write_bytes(b"this is not a png")
    args = ["run", "--protocol", "ood", "--methods", "knn", "--datasets", "synthetic",
            "--ood", "lsun_resize,uniform", "--data-dir", str(tmp_path / "data"),
            "--out", str(tmp_path / "r")]
    code, _, err = run_cli(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "bad.png is not a readable image" in lines[0]
    assert not (tmp_path / "r").exists()
    code, out, err = run_cli(["data", "info", "lsun_resize", "--data-dir", str(tmp_path / "data")],
                             capsys)
    assert code == 0 and "damaged" in out and "bad.png" in out and "Traceback" not in err


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(["run", "--methods", "knn", "--datasets", "synthetic",
                            "--out", str(blocker / "runs")], capsys)
    assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_out(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = run_cli(["run", "--methods", "knn", "--datasets", "synthetic",
                            "--out", str(ro / "runs")], capsys)
    assert code == 2 and "not writable" in err


def test_missing_dataset_offline(tmp_path, capsys):
    code, _, err = run_cli(["run", "--methods", "knn", "--datasets", "cifar10", "--no-download",
                            "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "r")],
                           capsys)
    assert code == 2
    assert "cifar10: not found" in err and "--download" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("what,expect", [
    ("methods", "mcl"), ("datasets", "fashion-mnist"), ("protocols", "ood-labeled"),
    ("presets", "standard"), ("protocols", "near: cifar100, interp, lsun_fix, imagenet_fix"),
])
def test_list(capsys, what, expect):
    code, out, _ = run_cli(["list", what], capsys)
    assert code == 0 and expect in out


def test_list_fields_shows_types_defaults_per_preset_and_help(capsys):
    code, out, _ = run_cli(["list", "fields", "mcl"], capsys)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    for name in ("alpha", "beta", "temperature", "pseudo_class", "sei_views"):
        assert name in lines
    assert "CCM weight of the same class at the same rotation" in lines["alpha"]
    assert "1|4|8" in lines["sei_views"]
    code, _, err = run_cli(["list", "fields", "mlc"], capsys)
    assert code == 2 and "did you mean 'mcl'" in err


def test_help_lists_the_commands(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and "run" in out and "list" in out


def test_ood_protocol_skips_a_missing_ood_set_unless_strict(tmp_path, capsys):
    out = tmp_path / "runs"
    base = ["run", "--protocol", "ood", "--methods", "knn", "--datasets", "synthetic",
            "--ood", "gaussian,interp,mnist", "--no-download", "--data-dir", str(tmp_path / "d")]
    code, _, err = run_cli(base + ["--strict", "--out", str(out)], capsys)
    assert code == 2 and "mnist" in err and "--strict" in err and not out.exists()
    code, stdout, err = run_cli(base + ["--out", str(out)], capsys)
    assert code == 0, err
    assert "skipping OOD set: mnist" in err
    skipped = json.loads((out / "skipped" / "synthetic-ood-mnist.json").read_text())
    assert skipped["status"] == "skipped" and "MNIST/raw" in skipped["reason"]
    rows = pd.read_csv(out / "results.csv")
    assert set(rows["ood_dataset"]) == {"gaussian", "interp"}
    assert set(rows["normal_class"]) == {"all"}
    assert (rows["n_test_normal"] == 96).all()
    assert "ood / synthetic" in stdout


def test_labeled_protocol_reports_accuracy(tmp_path, capsys, tiny_args, tiny_network_args):
    out = tmp_path / "runs"
    code, _, err = run_cli(["run", "--protocol", "ood-labeled", "--methods", "mcl,ce",
                            "--datasets", "synthetic", "--ood", "uniform", "--out", str(out),
                            *tiny_args], capsys)
    assert code == 0, err
    rows = pd.read_csv(out / "results.csv")
    acc = rows[rows["metric"] == "accuracy"]
    assert set(acc["method"]) == {"mcl", "ce"} and acc["value"].between(0, 1).all()
    from bench.nn.posthoc import POSTHOC

    # ce: its own and every post-hoc score (its head meets every need); mcl: its own and the
    # feature scores (no class head); read from the table, not listed here
    feature_only = {n for n, p in POSTHOC.items() if p.needs <= {"features", "labels"}}
    assert set(rows[rows["method"] == "ce"]["score"]) == {"msp", "odin"} | set(POSTHOC)
    assert set(rows[rows["method"] == "mcl"]["score"]) == {"sei", "cosnorm"} | feature_only
    assert feature_only == {"deep-knn", "mahalanobis", "rmds"}
    # the post-hoc settings change scoring only: the trained networks are reused
    code, _, err = run_cli(["run", "--protocol", "ood-labeled", "--methods", "ce", "--datasets",
                            "synthetic", "--ood", "uniform", "--out", str(out), *tiny_network_args,
                            "--set", "ce.knn_k=3", "--set", "ce.react_percentile=80"], capsys)
    assert code == 0 and "using the trained model" in err, err


def test_compile_flag_compiles_the_network_without_changing_the_job(tmp_path, tiny_network_args,
                                                                   capsys, monkeypatch):
    """--compile reaches the network (here with dynamo's eager backend: tracing, no codegen, to
    keep the test fast) and is not part of the job's identity: a later run without it skips."""
    import torch

    calls = []
    original = torch.nn.Module.compile

    def eager_compile(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, backend="eager", **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", eager_compile)
    out = tmp_path / "runs"
    args = ["run", "--methods", "rotnet", "--datasets", "synthetic", "--classes", "0",
            "--out", str(out), *tiny_network_args]
    code, stdout, err = run_cli([*args, "--compile"], capsys)
    assert code == 0, err
    assert calls == ["Network"]
    assert (out / "models").exists() and "rotnet/rot" in stdout
    code, _, err = run_cli(args, capsys)
    assert code == 0 and "1 of 1 jobs already" in err


@pytest.mark.slow
def test_compile_compiles_every_job_of_a_multi_method_run(tmp_path, tiny_args, capsys,
                                                         monkeypatch):
    """Each job compiles afresh (dynamo's recompile limit, 8, counts across the process: without
    the reset the fourth network ran uncompiled); graphs counted with a backend that only counts
    them."""
    import torch

    graphs, marks, modes = [], [], []

    def counting(gm, example_inputs):
        graphs.append(1)
        return gm.forward

    original = torch.nn.Module.compile

    def patched(self, *args, **kwargs):
        marks.append(len(graphs))
        modes.append(kwargs.pop("mode", "default"))
        return original(self, *args, backend=counting, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", patched)

    def per_job(methods, out, mode="default"):
        graphs.clear(), marks.clear(), modes.clear()
        code, _, err = run_cli(["run", "--methods", methods, "--datasets", "digits",
                                "--classes", "0", "--out", str(tmp_path / out), "--compile",
                                mode, *tiny_args], capsys)
        assert code == 0, err
        assert "recompile_limit" not in err
        return [b - a for a, b in zip(marks, [*marks[1:], len(graphs)])]

    together = per_job("simclr,rotnet,csi,mcl", "all")
    assert len(together) == 4 and min(together) >= 1
    assert together[-1] == per_job("mcl", "mcl-alone")[0]  # as many as when it runs alone
    per_job("simclr", "overhead", "reduce-overhead")
    assert modes == ["reduce-overhead"]


def test_score_only_rerun_reproduces_the_augmented_scores(tmp_path, tiny_args, capsys):
    """CSI and SimCLR score with random augmentations; a re-run that loads the trained networks
    (jobs deleted, models kept) must draw the same ones and give the same scores."""
    import shutil

    import numpy as np

    out = tmp_path / "runs"
    args = ["run", "--methods", "csi,simclr", "--datasets", "synthetic", "--classes", "0",
            "--out", str(out), "--set", "ens_samples=2", *tiny_args]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    first = {job.name: dict(np.load(job / "scores.npz")) for job in (out / "jobs").iterdir()}
    models = {p: p.stat().st_mtime_ns for p in out.glob("models/*/model.pt")}
    assert len(models) == 2
    shutil.rmtree(out / "jobs")
    for cached in out.glob("models/*/features-*.pt"):
        cached.unlink()  # the training banks are computed again from the loaded networks
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in models} == models  # loaded, not retrained
    for name, arrays in first.items():
        again = dict(np.load(out / "jobs" / name / "scores.npz"))
        assert arrays.keys() == again.keys()
        for key in arrays:
            assert np.array_equal(arrays[key], again[key]), (name, key)


def test_classical_detectors_on_learned_features_reuse_the_trained_models(
        tmp_path, tiny_args, tiny_network_args, capsys):
    out = tmp_path / "runs"
    base = ["--datasets", "synthetic", "--classes", "0,1", "--out", str(out), *tiny_args]
    code, _, err = run_cli(["run", "--methods", "mcl", *base], capsys)
    assert code == 0, err
    trained = {p: p.stat().st_mtime_ns for p in out.glob("models/*/model.pt")}
    assert len(trained) == 2
    code, stdout, err = run_cli(["run", "--methods", "knn,ocsvm", "--features", "pixel,mcl",
                                 *base], capsys)
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in out.glob("models/*/model.pt")} == trained
    assert "knn/mcl-feat" in stdout and "ocsvm/mcl-feat" in stdout and "knn/pixel" in stdout
    rows = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert set(rows[rows["score"] == "mcl-feat"]["features"]) == {"mcl:penultimate"}
    assert set(rows[rows["score"] == "pixel"]["features"]) == {"pixel"}
    assert set(rows[rows["method"] == "mcl"]["features"]) == {""}
    # an encoder not trained yet is trained first, once, and shared with its own later jobs
    base = [*base[:-len(tiny_args)], *tiny_network_args]  # rotation prediction has no projection
    code, _, err = run_cli(["run", "--methods", "knn", "--features", "rotnet", *base], capsys)
    assert code == 0, err
    assert len(list(out.glob("models/rotnet-*/model.pt"))) == 2
    code, _, err = run_cli(["run", "--methods", "rotnet", *base], capsys)
    assert code == 0 and "using the trained model" in err


def test_offline_download_failure_says_where_the_files_go(tmp_path, capsys, monkeypatch):
    import torchvision.datasets.utils as tv

    def offline(*args, **kwargs):
        raise OSError("URLError: no network")

    monkeypatch.setattr(tv, "download_url", offline)
    monkeypatch.setattr(tv, "download_and_extract_archive", offline)
    for name, where in (("mnist", "MNIST/raw"), ("cifar10", "cifar-10-python.tar.gz"),
                        ("svhn", "train_32x32.mat")):
        code, _, err = run_cli(["run", "--methods", "knn", "--datasets", name, "--data-dir",
                                str(tmp_path / "d"), "--out", str(tmp_path / "r")], capsys)
        assert code == 2 and "without internet" in err and where in err, err
        assert len(err.strip().splitlines()) == 1


def test_long_steps_print_progress_lines_in_a_log(monkeypatch):
    """In a log (stderr not a terminal) training prints a line every LOG_SECONDS."""
    from bench.datasets import load_dataset
    from bench.nn import train as engine
    from bench.nn.context import FitContext
    from helpers import tiny

    monkeypatch.setattr(engine, "LOG_SECONDS", 0.0)
    data = load_dataset("synthetic", "train")
    lines = []
    tiny("rotnet", epochs=2).fit(data.subset(data.labels == 0),
                                 FitContext(progress=True, log=lines.append))
    assert any(line.startswith("RotNet: ") and "steps" in line for line in lines), lines


def test_the_validation_protocol_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "runs"
    code, stdout, err = run_cli(["run", "--protocol", "ood-val", "--methods", "knn",
                                 "--datasets", "synthetic", "--out", str(out)], capsys)
    assert code == 0, err
    rows = pd.read_csv(out / "results.csv")
    assert set(rows["ood_dataset"]) == {"patches", "smooth-noise"}
    assert set(rows["protocol"]) == {"ood-val"}
    assert (rows["n_test_normal"] == round(0.1 * 192)).all()  # held-out training images
    assert "ood-val / synthetic" in stdout


def test_classical_detectors_on_a_labeled_networks_features(tmp_path, capsys, tiny_network_args):
    out = tmp_path / "runs"
    base = ["run", "--protocol", "ood-labeled", "--methods", "knn", "--datasets", "synthetic",
            "--ood", "uniform", "--out", str(out), *tiny_network_args]
    code, _, err = run_cli([*base, "--features", "ce"], capsys)
    assert code == 0, err
    rows = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert set(rows["score"]) == {"ce-feat"} and set(rows["features"]) == {"ce:penultimate"}
    code, _, err = run_cli([*base, "--features", "pixel,ce"], capsys)
    assert code == 2 and "--features pixel: in protocol ood-labeled" in err
    code, _, err = run_cli([*base, "--features", "ce", "--protocol", "ood"], capsys)
    assert code == 2 and "--features ce: ce does not run in protocol ood" in err
