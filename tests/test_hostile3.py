"""Run directories, rows files, checkpoints and image lists from someone else, round three:
each test plants the damage (links, FIFOs, bombs, NaN weights, escape sequences, swapped files)
and checks that bench neither writes outside the run, hangs, exhausts memory, crashes nor types
into the terminal."""

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.store import ROW_COLUMNS

BENCH = [sys.executable, "-m", "bench"]
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "backbone=resnet-tiny", "--set", "epochs=1", "--set", "batch_size=32",
        "--set", "proj_hidden=16", "--set", "proj_dim=8", "--set", "max_train_samples=64"]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def bench(args, timeout=300):
    """`bench ARGS` in a subprocess with a time limit: a hang is a failure, not a stuck suite."""
    return subprocess.run(BENCH + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def run_args(out, methods="knn,simclr", classes="0"):
    return ["run", "--methods", methods, "--datasets", "synthetic", "--classes", classes,
            "--out", out, *TINY]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    proc = bench(run_args(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def copy(tmp_path, finished):
    out = tmp_path / "run"
    shutil.copytree(finished, out, symlinks=True)
    return out


def _job(out, prefix):
    return next(d for d in (out / "jobs").iterdir() if d.name.startswith(prefix))


def _model(out, prefix):
    return next(d for d in (out / "models").iterdir() if d.name.startswith(prefix))


# --- nothing written outside the run, whatever is planted in it ---------------------------------

@pytest.mark.parametrize("folder", ["jobs", "models"])
def test_a_job_or_model_folder_planted_as_a_link_is_refused(copy, tmp_path, folder):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = _job(copy, "simclr") if folder == "jobs" else _model(copy, "simclr")
    shutil.rmtree(victim)
    victim.symlink_to(elsewhere, target_is_directory=True)
    proc = bench(run_args(copy))
    assert proc.returncode == 2, proc.stderr
    assert "is a symbolic link" in proc.stderr and "Traceback" not in proc.stderr
    assert list(elsewhere.iterdir()) == []  # nothing written there
    # a leaderboard of the run does not follow it either
    proc = bench(["leaderboard", "--runs", copy, "--out", tmp_path / "lb"])
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("lock", [".results.lock", "job"])
def test_a_lock_planted_as_a_link_creates_nothing(copy, tmp_path, lock):
    target = tmp_path / "created-by-bench"
    path = copy / ".results.lock" if lock == ".results.lock" else _job(copy, "knn") / ".lock"
    if path.exists():
        path.unlink()
    path.symlink_to(target)
    shutil.rmtree(_job(copy, "knn")) if lock == ".results.lock" else None
    (_job(copy, "knn") / "record.json").unlink() if lock == "job" else None
    proc = bench(run_args(copy))
    assert not target.exists(), "a lock link was followed"
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr


# --- nothing read that can hang or exhaust memory ----------------------------------------------

@pytest.mark.parametrize("command", ["run", "leaderboard", "report", "figures"])
def test_a_fifo_as_record_json_hangs_nothing(copy, tmp_path, command):
    record = _job(copy, "knn") / "record.json"
    record.unlink()
    os.mkfifo(record)
    args = {"run": run_args(copy),
            "leaderboard": ["leaderboard", "--runs", copy, "--out", tmp_path / "lb"],
            "report": ["report", "--runs", copy, "--out", tmp_path / "rep"],
            "figures": ["figures", "--runs", copy, "--out", tmp_path / "fig", "--no-tsne"]}
    proc = bench(args[command], timeout=240)  # a hang fails here
    assert "Traceback" not in proc.stderr, proc.stderr


def test_a_fifo_as_model_pt_and_a_record_linked_to_dev_zero(copy):
    model = _model(copy, "simclr") / "model.pt"
    model.unlink()
    os.mkfifo(model)
    record = _job(copy, "knn") / "record.json"
    record.unlink()
    record.symlink_to("/dev/zero")
    shutil.rmtree(_job(copy, "simclr"))
    proc = bench(run_args(copy), timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert (_model(copy, "simclr") / "model.pt").is_file()  # retrained, the FIFO replaced


def _deflated_torch_bomb(path: Path, numel: int) -> None:
    """A torch zip whose one storage is deflated: a few kB declaring `numel` float32s."""
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(numel // 1000)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if "/data/" in info.filename:
                data = bytes(numel * 4)
            dst.writestr(info.filename, data)


def test_a_compressed_torch_file_is_refused_before_it_is_unpacked(tmp_path, capsys):
    from bench.files import NotRegularFile, load_torch_checked

    bomb = tmp_path / "bomb.pt"
    _deflated_torch_bomb(bomb, 50_000_000)  # 200 MB declared
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(NotRegularFile, match="compressed entries"):
        load_torch_checked(bomb)
    code, _, err = run_cli(["run", "--methods", "mcl", "--datasets", "synthetic", "--classes",
                            "0", "--checkpoint", bomb, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "compressed entries" in err and not (tmp_path / "run").exists()


def test_an_npz_bomb_is_refused(copy, tmp_path, capsys, monkeypatch):
    import bench.files

    monkeypatch.setattr(bench.files, "NPZ_MAX_BYTES", 10_000_000)
    job = _job(copy, "simclr")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, features=np.zeros((5000, 1000), np.float32),  # 20 MB of zeros
                        group=np.array(["normal"] * 5000))
    (job / "embedding.npz").write_bytes(buffer.getvalue())
    with pytest.raises(bench.files.NotRegularFile, match="unpack to"):
        bench.files.load_npz(job / "embedding.npz")


# --- nothing that crashes ------------------------------------------------------------------------

def test_a_report_of_rows_no_published_table_matches(tmp_path, capsys):
    """The default `bench run` on digits matches no published table: the page is written."""
    out = tmp_path / "run"
    assert bench(["run", "--methods", "knn,ocsvm", "--classes", "0,1", "--out", out]
                 ).returncode == 0
    code, printed, err = run_cli(["report", "--runs", out, "--out", tmp_path / "rep"], capsys)
    assert code == 0, err
    assert (tmp_path / "rep" / "index.html").is_file()
    assert "No cell of these rows matches" in (tmp_path / "rep" / "index.html").read_text()


# --- checkpoints and weights files: malformed, non-finite, swapped --------------------------------

def _mcl_checkpoint(tmp_path, capsys):
    """A real bench model.pt of MCL (tiny), to damage."""
    out = tmp_path / "src"
    code, _, err = run_cli(run_args(out, "mcl"), capsys)
    assert code == 0, err
    return next((out / "models").glob("mcl-*/model.pt"))


def _damaged(state: dict, how: str) -> dict:
    state = dict(state)
    key = next(k for k in state if k.endswith("conv1.weight") or k.endswith("stem.0.weight"))
    if how == "string":
        state[key] = "not a tensor"
    elif how == "nan":
        state[key] = torch.full_like(state[key], float("nan"))
    elif how == "inf":
        state[key] = torch.full_like(state[key], float("inf"))
    elif how == "complex":
        state[key] = state[key].to(torch.complex64)
    elif how == "zero-dim":
        state["backbone.layers.0.conv1.weight"] = torch.tensor(1.0)
    elif how == "projector-alone":
        state.pop("projector.2.weight", None)
        state.pop("projector.2.bias", None)
    elif how == "block-name":
        block = next(k for k in state if k.startswith("backbone.layers."))
        state["backbone.layers.x." + block.split(".", 3)[3]] = state.pop(block)
    return state


@pytest.mark.parametrize("how,said", [
    ("string", "holds str, not a tensor"), ("nan", "NaN or infinite"), ("inf", "NaN or infinite"),
    ("complex", "complex numbers"), ("zero-dim", "IndexError"),
    ("projector-alone", "KeyError"), ("block-name", "ValueError")])
def test_a_malformed_checkpoint_is_one_line(tmp_path, capsys, how, said):
    good = torch.load(_mcl_checkpoint(tmp_path, capsys), weights_only=True)
    bad = tmp_path / f"{how}.pt"
    torch.save({**good, "model": _damaged(good["model"], how)}, bad)
    code, _, err = run_cli(run_args(tmp_path / "run", "mcl") + ["--checkpoint", bad], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("bench: error: ") and said in err, err
    assert not (tmp_path / "run").exists()


def test_a_legacy_torch_file_and_a_missing_one_get_true_messages(tmp_path, capsys):
    legacy = tmp_path / "legacy.pt"
    torch.save({"x": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    code, _, err = run_cli(run_args(tmp_path / "run", "mcl") + ["--checkpoint", legacy], capsys)
    assert code == 2 and "legacy format" in err and "no such file" not in err
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    code, _, err = run_cli(run_args(tmp_path / "run", "mcl") + ["--checkpoint", fifo], capsys)
    assert code == 2 and "not a regular file" in err and "no such file" not in err
    code, _, err = run_cli(run_args(tmp_path / "run", "mcl") + ["--checkpoint",
                                                                 tmp_path / "absent.pt"], capsys)
    assert code == 2 and "no such file" in err


def test_a_checkpoint_swapped_after_planning_fails_its_job(tmp_path, capsys, monkeypatch):
    """The file is replaced between the plan and the job: the job fails, naming it."""
    import bench.runner

    path = _mcl_checkpoint(tmp_path, capsys)
    ours = tmp_path / "ours.pt"
    shutil.copy(path, ours)
    plan = bench.runner.plan

    def plan_then_swap(spec):
        planned = plan(spec)
        state = torch.load(ours, weights_only=True)
        state["model"] = {k: v + 1 if v.is_floating_point() else v
                          for k, v in state["model"].items()}
        torch.save(state, ours)  # another file under the same name
        return planned

    monkeypatch.setattr(bench.runner, "plan", plan_then_swap)
    code, _, err = run_cli(run_args(tmp_path / "run", "mcl") + ["--checkpoint", ours], capsys)
    assert code == 1 and "changed since the run was planned" in err, err
    assert "Traceback" not in err


def test_the_gaussian_fit_gives_up_on_what_no_ridge_fixes():
    from bench.nn.scoring import fit_gaussians

    labels = torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError, match="not finite"):
        fit_gaussians(torch.full((8, 4), float("nan")), labels, 1, 1e-6)
    huge = torch.randn(8, 4, dtype=torch.float64) * 1e200  # finite, but the covariance is inf
    with pytest.raises(ValueError, match="not positive definite even with a ridge"):
        fit_gaussians(huge, labels, 1, 1e-6)


def test_weights_files_and_names_from_elsewhere(tmp_path, capsys):
    bad = tmp_path / "strings.pt"
    torch.save({"conv1.weight": "x", "fc.weight": torch.zeros(2)}, bad)
    args = ["run", "--methods", "knn", "--features", "resnet18-in1k", "--classes", "0",
            "--set", "image_size=32", "--out", tmp_path / "run"]
    code, _, err = run_cli([*args, "--set", f"resnet18-in1k.weights={bad}"], capsys)
    assert code == 2 and "holds str, not a tensor" in err and err.count("\n") == 1, err
    code, _, err = run_cli([*args, "--set", f"resnet18-in1k.weights={tmp_path / 'no.pt'}"],
                           capsys)
    assert code == 2 and "--set resnet18-in1k.weights=PATH" in err, err  # the real field
    code, _, err = run_cli(["run", "--methods", "knn", "--features",
                            "timm-resnet18.a1_in1k/../../x", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "not a timm model name" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


# --- nothing typed into the terminal or a spreadsheet --------------------------------------------

def _rows(**changes) -> pd.DataFrame:
    """test_hostile's valid rows table, each given column's first row set to the value."""
    from test_hostile import _rows as valid_rows

    return valid_rows(**{column: (0, value) for column, value in changes.items()})


ESCAPES = {"clipboard": "\x1b]52;c;cm0gLXJmIH4=\x07", "title": "\x1b]0;pwned\x07",
           "clear": "\x1b[2J", "newline": "x\n| forged | row |", "c1": "\x9b2J"}


@pytest.mark.parametrize("column", ["score", "variant", "normal_class", "ood_dataset",
                                    "code_version"])
@pytest.mark.parametrize("payload", list(ESCAPES))
def test_escape_sequences_in_a_rows_file_are_refused(tmp_path, capsys, column, payload):
    path = tmp_path / "rows.csv"
    _rows(**{column: ESCAPES[payload]}).to_csv(path, index=False)
    code, out, err = run_cli(["leaderboard", "--rows", path, "--out", tmp_path / "lb"], capsys)
    assert code == 2 and "control character" in err, err
    assert "\x1b" not in out + err and "\x9b" not in out + err
    assert err.count("\n") == 1  # one line: the newline did not forge a second
    assert not (tmp_path / "lb").exists()


def test_escape_sequences_in_a_record_are_not_echoed(copy, capsys):
    record_path = _job(copy, "knn") / "record.json"
    record = json.loads(record_path.read_text())
    record.update(status="failed", error="boom \x1b]0;pwned\x07\x1b[2J\nfailed: forged line")
    record_path.write_text(json.dumps(record))
    code, out, err = run_cli(run_args(copy), capsys)  # a failed job is not retried: printed
    assert code == 1
    assert "\x1b" not in out + err and "\x07" not in out + err
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and "\\x1b]0;pwned" in failed[0]


@pytest.mark.parametrize("column,value", [("normal_class", '=HYPERLINK("http://x","y")'),
                                          ("score", "+cmd"), ("ood_dataset", "@SUM(1)")])
def test_spreadsheet_formulas_are_refused_on_the_way_in(tmp_path, capsys, column, value):
    path = tmp_path / "rows.csv"
    _rows(**{column: value}).to_csv(path, index=False)
    code, _, err = run_cli(["leaderboard", "--rows", path, "--out", tmp_path / "lb"], capsys)
    assert code == 2 and "spreadsheet formula" in err, err


def test_leaderboard_csv_cells_that_start_like_formulas_are_neutralised():
    from bench.reporting.leaderboard import neutralised

    frame = pd.DataFrame({"=cmd": ["-1+1", "@x", "ok"], "n": [-1.5, 2.0, 3.0]})
    out = neutralised(frame)
    assert list(out.columns) == ["'=cmd", "n"]
    assert list(out["'=cmd"]) == ["'-1+1", "'@x", "ok"] and list(out["n"]) == [-1.5, 2.0, 3.0]


def test_a_pipe_in_a_markdown_cell_does_not_split_the_table():
    from bench.reporting.leaderboard import _cell

    assert _cell("a|b\n| forged |") == "a\\|b\\n\\| forged \\|"


def test_absurd_seeds_and_repeated_flags_are_refused(tmp_path, capsys):
    path = tmp_path / "rows.csv"
    _rows(seed=1e30).to_csv(path, index=False)
    code, _, err = run_cli(["leaderboard", "--rows", path, "--out", tmp_path / "lb"], capsys)
    assert code == 2 and "is not a seed" in err, err
    code, _, err = run_cli(["run", "--methods", "knn", "--set", "knn.n_neighbors=3", "--set",
                            "knn.n_neighbors=7", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "given twice" in err
    code, _, err = run_cli(["run", "--methods", "mcl", "--checkpoint", "mcl=a.pt",
                            "--checkpoint", "mcl=b.pt", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "given twice" in err and not (tmp_path / "run").exists()


# --- OpenOOD image lists from the internet ------------------------------------------------------

def _openood_tree(root, lines_of=None):
    """A minimal OpenOOD layout: one 40 x 40 image per list line; `lines_of` overrides a
    list's lines."""
    from PIL import Image

    lists = root / "openood" / "benchmark_imglist" / "cifar10"
    lists.mkdir(parents=True)
    for name in ("cifar10", "texture"):
        folder = root / "openood" / "images_classic" / name / "test"
        folder.mkdir(parents=True)
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "0.png")
        lines = (lines_of or {}).get(name, [f"{name}/test/0.png 0"])
        (lists / f"test_{name}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("line,said", [
    ("texture/test/0.png 0 extra", "is not a label"),
    ("texture/test/0.png zero", "is not a label"),
    ("texture/test/0.png 10000000", "outside -1..999"),
    ("texture/test/0.png {'label': 10**8}", "is not a label"),
    ("/etc/passwd 0", "not a path inside images_classic"),
    ("../../../etc/passwd 0", "not a path inside images_classic")])
def test_every_line_of_an_openood_list_is_checked_when_probed(tmp_path, line, said):
    from bench.datasets import openood
    from bench.errors import BenchError

    _openood_tree(tmp_path, {"texture": ["texture/test/0.png 0", line]})
    with pytest.raises(BenchError, match=said) as info:
        openood.probe(tmp_path, "cifar10", "texture")
    assert "line 2" in str(info.value)


def test_an_image_bomb_in_an_openood_list_is_refused(tmp_path, monkeypatch):
    from PIL import Image

    from bench.datasets import openood
    from bench.errors import BenchError

    monkeypatch.setattr(openood, "MAX_PIXELS", 64 * 64)
    _openood_tree(tmp_path)
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(
        tmp_path / "openood" / "images_classic" / "texture" / "test" / "0.png")
    with pytest.raises(BenchError, match="more than an OpenOOD image has"):
        openood.load(tmp_path, "cifar10", "texture", 32)
    Image.MAX_IMAGE_PIXELS, old = 1000, Image.MAX_IMAGE_PIXELS  # PIL's own bomb error, caught
    try:
        monkeypatch.setattr(openood, "MAX_PIXELS", 10**9)
        with pytest.raises(BenchError, match="not a readable image"):
            openood.load(tmp_path, "cifar10", "texture", 32)
    finally:
        Image.MAX_IMAGE_PIXELS = old


# --- figures and the report on hostile rows -----------------------------------------------------

def test_thousands_of_entries_are_ranked_quickly_and_not_drawn(tmp_path, capsys):
    """100,000 rows of 833 entries: the tests finish (vectorised), the diagram is refused."""
    rng = np.random.default_rng(0)
    n_entries, n_blocks = 833, 120
    frame = pd.DataFrame({
        "method": np.repeat([f"m{i}" for i in range(n_entries)], n_blocks), "score": "s",
        "normal_class": np.tile([str(b) for b in range(n_blocks)], n_entries),
        "value": rng.uniform(0.3, 1.0, n_entries * n_blocks)})
    rows = _rows().iloc[:0].reindex(range(len(frame)))
    for column in ROW_COLUMNS:
        rows[column] = frame[column] if column in frame else _rows()[column].iloc[0]
    rows["job_id"] = rows["method"] + "-" + rows["normal_class"]
    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    script = (f"import bench; t = bench.significance({str(path)!r}); "
              "print(len(t), t['p_holm'].notna().sum())")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and proc.stdout.split() == ["833", "832"], proc.stderr
    proc = bench(["figures", "--rows", path, "--figure", "cd", "--out", tmp_path / "f"],
                 timeout=180)
    assert proc.returncode == 0 and "more than the 100 one diagram can show" in proc.stderr


def test_constant_features_are_not_drawn_as_a_t_sne(copy, tmp_path, capsys):
    job = _job(copy, "simclr")
    arrays = dict(np.load(job / "embedding.npz"))
    arrays["features"] = np.zeros_like(arrays["features"])
    np.savez_compressed(job / "embedding.npz", **arrays)
    proc = bench(["figures", "--runs", copy, "--job", job.name, "--figure", "jobs",
                  "--out", tmp_path / "f"])
    assert proc.returncode == 0, proc.stderr  # no SIGSEGV in scikit-learn's Barnes-Hut
    assert "constant or not finite" in proc.stderr


def test_a_dollar_label_is_drawn_as_plain_text(tmp_path, capsys):
    rows = _rows()
    rows["score"] = rows["score"].where(rows["method"] != "mcl", "$\\foo{$")
    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    code, out, err = run_cli(["figures", "--rows", path, "--figure", "per-class",
                              "--out", tmp_path / "f"], capsys)
    assert code == 0, err
    assert list((tmp_path / "f").glob("auroc_per_class_*.png")), err


def test_a_killed_report_leaves_its_temporaries_under_out_for_the_cleaner(tmp_path, capsys):
    import socket

    from bench.files import HOST, clean_stale_temporaries

    out = tmp_path / "rep"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".figures.{HOST}.{dead.pid}.abc.tmp"  # what a killed report leaves
    stale.mkdir()
    (stale / "x.png").write_bytes(b"png")
    assert socket.gethostname()
    assert clean_stale_temporaries(out, recursive=False) == [stale]
    assert not stale.exists()


def test_a_weights_file_swapped_after_planning_fails_its_job(tmp_path, capsys, monkeypatch):
    """Pretrained weights named by a local file: replaced between the plan and the job, the
    job fails naming the change instead of scoring the new file under the old file's id."""
    import torchvision

    import bench.runner

    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    plan = bench.runner.plan

    def plan_then_swap(spec):
        planned = plan(spec)
        torch.manual_seed(1)
        torch.save(torchvision.models.resnet18().state_dict(), weights)  # other weights
        return planned

    monkeypatch.setattr(bench.runner, "plan", plan_then_swap)
    code, _, err = run_cli(["run", "--methods", "knn", "--features", "resnet18-in1k",
                            "--datasets", "synthetic", "--classes", "0", "--set",
                            "image_size=32", "--set", f"resnet18-in1k.weights={weights}",
                            "--out", tmp_path / "run"], capsys)
    assert code == 1 and "changed since the run was planned" in err, err
