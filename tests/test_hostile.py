"""What the operating system, a killed process or someone else's files can do to a run: each
test does the damage and checks the promised outcome (one line and an exit code, nothing lost,
nothing run, nothing written outside --out)."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.store import ROW_COLUMNS, RunStore

BENCH = [sys.executable, "-m", "bench"]
TINY = ["--set", "backbone=resnet-tiny", "--set", "epochs=2", "--set", "batch_size=32",
        "--set", "proj_hidden=16", "--set", "proj_dim=8", "--set", "max_train_samples=64"]
VALUES = ["method", "score", "normal_class", "ood_dataset", "seed", "metric", "value"]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("bench: error: "), err
    assert "Traceback" not in err, err
    return lines[-1]


def _run_args(out, methods="knn,mcl", classes="0,1"):
    return ["run", "--methods", methods, "--datasets", "synthetic", "--classes", classes,
            "--out", str(out), *TINY]


def _long(args: list) -> list:
    """The tiny network's flags with 300 epochs (a field is set once): jobs that run long
    enough to be killed."""
    return ["epochs=300" if a == "epochs=2" else a for a in args]


def _values(out: Path) -> pd.DataFrame:
    rows = pd.read_csv(out / "results.csv", dtype={"normal_class": str}, keep_default_na=False)
    return rows[VALUES].sort_values(VALUES[:-1]).reset_index(drop=True)


def _rows(**changes) -> pd.DataFrame:
    """A valid rows table of 6 one-class classes for knn, mcl and csi."""
    out = []
    for method, score in (("knn", "pixel"), ("mcl", "sei"), ("csi", "csi")):
        for c in range(6):
            row = dict.fromkeys(ROW_COLUMNS, "")
            row.update(method=method, score=score, protocol="one-class", protocol_version="2",
                       dataset="synthetic", normal_class=str(c), ood_dataset="rest", seed=0,
                       metric="auroc", value=0.5 + 0.05 * c + {"knn": 0, "mcl": 0.1, "csi": 0.05}[method],
                       preset="quick", config_hash="h" + method, job_id=f"{method}-{c}",
                       features="pixel" if method == "knn" else "")
            out.append(row)
    frame = pd.DataFrame(out)
    for column, (index, value) in changes.items():
        frame[column] = frame[column].astype(object)
        frame.loc[index, column] = value
    return frame


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted run, shared by the tests that damage copies of it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    proc = subprocess.run(BENCH + _run_args(out), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


# --- files that are not ours to trust ------------------------------------------------------------

class Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("victim", ["model.pt", "features", "checkpoint.pt"])
def test_a_pickle_payload_in_a_torch_file_never_runs(tmp_path, finished, victim, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    marker = tmp_path / "pwned"
    model_dir = next(d for d in (out / "models").iterdir() if d.name.startswith("mcl-synthetic-one-class-0-"))
    target = {"model.pt": model_dir / "model.pt", "checkpoint.pt": model_dir / "checkpoint.pt",
              "features": next(model_dir.glob("features-*.pt"))}[victim]
    if victim == "checkpoint.pt":
        (model_dir / "model.pt").unlink()  # so that training resumes from the checkpoint
    torch.save({"model": Payload(marker), "optimizer": {}, "epoch": 1, "history": []}, target)
    assert not marker.exists()
    code, _, err = run_cli(_run_args(out, "mcl", "0") + ["--set", "mcl.sei_views=4"], capsys)
    assert code == 0, err
    assert not marker.exists(), "unpickling ran code"
    assert "damaged" in err


def test_an_object_array_in_scores_never_unpickles(tmp_path, finished, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    marker = tmp_path / "pwned"
    job = next(d for d in (out / "jobs").iterdir() if d.name.startswith("mcl-"))
    np.savez(job / "scores.npz", **{"rest/is_anomaly": np.array([Payload(marker)], dtype=object)})
    code, _, err = run_cli(["figures", "--runs", out, "--out", tmp_path / "figs", "--job",
                            job.name, "--no-tsne", "--figure", "jobs"], capsys)
    assert code == 0, err
    assert not marker.exists(), "np.load unpickled an object array"
    assert f"ROC and histograms of {job.name}: not drawn" in err


@pytest.mark.parametrize("column,value", [("protocol", "../../x"), ("preset", "q/../../../y"),
                                          ("dataset", "x/../../z"), ("job_id", "../../j")])
@pytest.mark.parametrize("command", ["rows", "leaderboard", "figures"])
def test_names_in_a_rows_file_never_become_paths_outside_out(tmp_path, capsys, column, value,
                                                              command):
    rows_file = tmp_path / "colleague" / "rows.csv"
    rows_file.parent.mkdir()
    _rows(**{column: (0, value)}).to_csv(rows_file, index=False)
    before = set(tmp_path.rglob("*"))
    out = tmp_path / "deep" / "er" / "out"
    code, _, err = run_cli([command, "--rows", rows_file, "--out", out], capsys)
    assert code == 2
    line = one_error_line(err)
    assert str(rows_file) in line and f"column {column}, line 2" in line
    assert set(tmp_path.rglob("*")) == before


def test_a_record_naming_another_job_is_read_as_its_folder(tmp_path, finished, capsys):
    """The record of job A claims to be job B (of another directory): A's own rows count,
    under A's name, and B's are not taken in."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    jobs = sorted(p.name for p in (out / "jobs").iterdir())
    a, b = jobs[0], jobs[1]
    record = json.loads((out / "jobs" / a / "record.json").read_text())
    record["job_id"] = "../../elsewhere/jobs/" + b
    (out / "jobs" / a / "record.json").write_text(json.dumps(record))
    rows = RunStore(out).rows()
    assert sorted(rows["job_id"].unique()) == jobs
    assert {r["job_id"] for r in RunStore(out).records()} == set(jobs)


def test_a_leaderboard_link_out_of_the_run_directory_is_refused(tmp_path, finished, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "README.md").write_text("precious\n")
    shutil.rmtree(out / "leaderboard")
    (out / "leaderboard").symlink_to(elsewhere)
    code, _, err = run_cli(_run_args(out), capsys)
    assert code == 2 and "leads outside" in one_error_line(err)
    assert (elsewhere / "README.md").read_text() == "precious\n"


# --- rows from someone else -----------------------------------------------------------------

@pytest.mark.parametrize("column,value,why", [
    ("value", "NaN", "is not a finite number"),
    ("value", "abc", "is not a finite number"),
    ("value", "inf", "is not a finite number"),
    ("value", "99.4", "is outside [0, 1]"),
    ("value", "-0.1", "is outside [0, 1]"),
    ("seed", "x", "is not a seed"),
    ("seed", "-1", "is not a seed"),
    ("metric", "auc", "is not a metric"),
    ("protocol_version", "two", "is not a protocol version"),
])
@pytest.mark.parametrize("command", ["leaderboard", "compare", "figures"])
def test_a_bad_rows_file_is_one_line_and_exit_2(tmp_path, capsys, column, value, why, command):
    rows_file = tmp_path / "rows.csv"
    _rows(**{column: (3, value)}).to_csv(rows_file, index=False)
    code, _, err = run_cli([command, "--rows", rows_file, "--out", tmp_path / "out"]
                           if command != "compare" else [command, "--rows", rows_file], capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"{rows_file}: column {column}, line 5" in line and why in line
    assert not (tmp_path / "out").exists()


def test_a_rows_file_with_missing_columns_names_them(tmp_path, capsys):
    rows_file = tmp_path / "rows.csv"
    _rows().drop(columns=["seed", "metric"]).to_csv(rows_file, index=False)
    code, _, err = run_cli(["leaderboard", "--rows", rows_file, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "lacks the columns seed, metric" in one_error_line(err)


def test_duplicated_rows_count_once_and_disagreeing_copies_are_named(tmp_path, capsys):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    _rows().to_csv(first, index=False)
    _rows(value=(2, 0.99)).to_csv(second, index=False)
    code, out, err = run_cli(["leaderboard", "--rows", first, "--rows", first, "--rows", second,
                              "--out", tmp_path / "lb"], capsys)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "lb" / "one-class_synthetic_quick.csv")
    assert table.set_index("method/score").loc["knn/pixel", "2"] == 60.0  # the first read
    assert "is given twice with values 0.39 apart; the first read is kept" in err


def test_rows_of_an_older_protocol_version_are_left_out_and_said(tmp_path, capsys):
    rows_file = tmp_path / "rows.csv"
    old = _rows().assign(protocol_version="1", job_id=lambda f: f["job_id"] + "-old",
                         value=0.01)
    pd.concat([_rows(), old]).to_csv(rows_file, index=False)
    code, out, err = run_cli(["leaderboard", "--rows", rows_file, "--out", tmp_path / "lb"],
                             capsys)
    assert code == 0, err
    assert "rows of protocol version 1 left out" in out
    table = pd.read_csv(tmp_path / "lb" / "one-class_synthetic_quick.csv")
    assert table["mean"].min() > 50


# --- the operating system's errors ------------------------------------------------------------

def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_disk_full_during_a_run_is_one_line_nothing_is_lost_and_the_rerun_completes(
        tmp_path, finished):
    """A file-size limit (ulimit -f) makes the first checkpoint unwritable, as a full disk does:
    one line, exit 2, the jobs finished before it intact, and the same command on a roomy disk
    gives the rows of an uninterrupted run."""
    out = tmp_path / "run"
    proc = subprocess.run(BENCH + _run_args(out), capture_output=True, text=True,
                          preexec_fn=_limit_file_size(20_000))
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert "cannot write" in line and "file too large" in line and "checkpoint.pt" in line
    done = [r for r in RunStore(out).records() if r["status"] == "done"]
    assert {r["method"] for r in done} == {"knn"} and len(done) == 2
    assert not list(out.rglob("*.tmp"))
    again = subprocess.run(BENCH + _run_args(out), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "retrying it: it failed for a reason of the machine" in again.stderr
    pd.testing.assert_frame_equal(_values(out), _values(finished))


def test_a_record_that_cannot_be_read_is_one_line(tmp_path, finished, capsys, monkeypatch):
    import pathlib
    import shutil

    import bench.store

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    real = bench.store.read_regular

    def denied(path, *args, **kwargs):
        if pathlib.Path(path).name == "record.json":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(bench.store, "read_regular", denied)
    code, _, err = run_cli(_run_args(out), capsys)
    assert code == 2
    line = one_error_line(err)
    assert "cannot read" in line and "record.json: permission denied" in line


def test_a_record_that_is_a_folder_is_one_line(tmp_path, finished, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    record = next((out / "jobs").iterdir()) / "record.json"
    record.unlink()
    record.mkdir()
    code, _, err = run_cli(["leaderboard", "--runs", out, "--out", tmp_path / "lb"], capsys)
    assert code == 2 and "record.json: is a directory" in one_error_line(err)


@pytest.mark.parametrize("shape", ["component", "path"])
def test_names_longer_than_the_file_system_allows(tmp_path, capsys, shape):
    out = tmp_path / ("x" * 300) if shape == "component" else tmp_path.joinpath(*["y" * 200] * 25)
    code, _, err = run_cli(_run_args(out), capsys)
    assert code == 2 and "--out" in one_error_line(err) and "long" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []
    code, _, err = run_cli(_run_args(tmp_path / "ok") + ["--data-dir", tmp_path / ("d" * 300)],
                           capsys)
    assert code == 2 and "--data-dir" in one_error_line(err)


@pytest.mark.parametrize("link", ["dangling", "loop"])
def test_out_that_is_a_broken_link_is_one_line(tmp_path, capsys, link):
    out = tmp_path / "out"
    if link == "dangling":
        out.symlink_to(tmp_path / "nowhere")
    else:
        out.symlink_to(tmp_path / "other")
        (tmp_path / "other").symlink_to(out)
    code, _, err = run_cli(_run_args(out), capsys)
    line = one_error_line(err)
    assert code == 2 and ("does not exist" in line if link == "dangling" else "loop" in line)
    assert not (tmp_path / "nowhere").exists()


def test_absurd_seeds_and_plans_are_refused_up_front(tmp_path, capsys):
    code, _, err = run_cli(_run_args(tmp_path / "a") + ["--seeds", "0-2000000"], capsys)
    assert code == 2 and "more than 100,000 values" in one_error_line(err)
    code, _, err = run_cli(["run", "--methods", "knn", "--datasets", "synthetic", "--out",
                            tmp_path / "b", "--seeds", "0-30000"], capsys)
    assert code == 2 and "the plan has 120,004 jobs; at most 100,000" in one_error_line(err)
    code, _, err = run_cli(_run_args(tmp_path / "c") + ["--seeds", str(2**32)], capsys)
    assert code == 2 and "at most 4294967295" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_stray_files_and_garbage_records_in_jobs(tmp_path, finished, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "jobs" / ".DS_Store").write_bytes(b"\0\0\1Bud1")
    (out / "jobs" / "notes.txt").write_text("a stray file\n")
    folders = sorted((out / "jobs").glob("mcl-*"))
    (folders[0] / "record.json").write_text("[]")
    record = json.loads((folders[1] / "record.json").read_text())
    del record["job_id"]
    (folders[1] / "record.json").write_text(json.dumps(record))
    code, _, err = run_cli(_run_args(out), capsys)
    assert code == 0, err
    assert "2 of 4 jobs already in" in err  # the two garbage records were redone
    pd.testing.assert_frame_equal(_values(out), _values(finished))


@pytest.mark.parametrize("value", ["~nosuchuser-bench/x", "/tmp/" + "z" * 300])
def test_a_bad_bench_data_is_one_line(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("BENCH_DATA", value)
    code, _, err = run_cli(_run_args(tmp_path / "out"), capsys)
    assert code == 2 and "$BENCH_DATA" in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_compare_to_an_unwritable_csv_and_a_foreign_reference_dir(tmp_path, capsys):
    rows_file = tmp_path / "rows.csv"
    _rows().to_csv(rows_file, index=False)
    code, _, err = run_cli(["compare", "--rows", rows_file, "--csv", "/proc/bench-test.csv"],
                           capsys)
    assert code == 2 and "cannot write /proc/bench-test.csv" in one_error_line(err)
    refs = tmp_path / "refs"
    refs.mkdir()
    pd.DataFrame({"name": ["x"], "score": [1]}).to_csv(refs / "mine.csv", index=False)
    code, _, err = run_cli(["compare", "--rows", rows_file, "--reference-dir", refs], capsys)
    line = one_error_line(err)
    assert code == 2 and f"{refs / 'mine.csv'}: not a reference table" in line and "lacks" in line


def test_thread_counts_above_the_cores_are_lowered(monkeypatch):
    from bench.cli import clamp_thread_variables

    monkeypatch.setenv("OMP_NUM_THREADS", "99999")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    notes = clamp_thread_variables()
    cores = len(os.sched_getaffinity(0))
    assert os.environ["OMP_NUM_THREADS"] == str(cores) and os.environ["MKL_NUM_THREADS"] == "1"
    assert notes == [f"OMP_NUM_THREADS=99999 is more than this machine's {cores} cores; "
                     f"using {cores}"]
    proc = subprocess.run(BENCH + ["list", "presets"], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "99999"})
    assert proc.returncode == 0 and "OMP_NUM_THREADS=99999 is more than" in proc.stderr


# --- killed processes -------------------------------------------------------------------------

def _complete(path: Path) -> bool:
    data = path.read_bytes()
    if path.suffix == ".png":
        return data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82")
    return data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF")


@pytest.mark.slow
def test_a_kill_during_figures_leaves_the_old_file_or_the_new_one(tmp_path):
    rows_file = tmp_path / "rows.csv"
    _rows().to_csv(rows_file, index=False)
    out = tmp_path / "figs"
    args = BENCH + ["figures", "--rows", str(rows_file), "--out", str(out)]
    first = subprocess.run(args, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    drawn = sorted(out.glob("*.p[nd][gf]"))
    assert len(drawn) >= 4
    for delay in (2.0, 2.6, 3.2, 3.8, 4.4, 5.0):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for path in drawn:
            assert path.exists() and _complete(path), (delay, path)
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0
    assert not list(out.glob(".*.tmp")), "temporaries of killed runs were left"


def _descendants(pid: int) -> set[int]:
    from bench.executors import descendants

    return descendants(pid)


def _wait_for(condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return False


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.add(pid)
        except OSError:
            continue
    return alive


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_parent_leaves_no_worker(tmp_path, sig):
    args = _long(_run_args(tmp_path / "run", "mcl", "0-3")) + ["--workers", "2"]
    proc = subprocess.Popen(BENCH + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert _wait_for(lambda: len(_descendants(proc.pid)) >= 2, 60), "no workers started"
    time.sleep(3)  # the workers are training
    workers = _descendants(proc.pid)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert _wait_for(lambda: not _alive(workers), 10), f"workers left: {_alive(workers)}"
    store = RunStore(tmp_path / "run")
    for job_id in store.job_ids():  # no half-written job: a record is complete or absent
        record = store.record(job_id)
        assert record is None or record["status"] in ("done", "failed")
        assert record is None or record["status"] != "done" or not store.damaged_files(job_id)


@pytest.mark.slow
def test_a_killed_local_ray_run_leaves_no_ray_process(tmp_path):
    pytest.importorskip("ray")
    args = _long(_run_args(tmp_path / "run", "mcl", "0-3")) + ["--executor", "ray",
                                                               "--workers", "2"]
    proc = subprocess.Popen(BENCH + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def agents_up():
        return any("Agent" in _cmdline(p) for p in _descendants(proc.pid))

    assert _wait_for(agents_up, 90), "Ray did not start"
    time.sleep(4)  # the reaper has seen the agents
    started = _descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _wait_for(lambda: not _alive(started), 20), \
        f"left running: {[_cmdline(p) for p in _alive(started)]}"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_no_more_workers_than_jobs(monkeypatch):
    """--workers 6 for one job runs it in this process; for two jobs it starts two workers."""
    from bench import executors

    started = []

    class FakeProcess:
        def __init__(self, target, args):
            started.append(args)

        def start(self):
            pass

        def is_alive(self):
            return False

        def join(self, timeout=None):
            pass

    class FakeContext:
        Process = FakeProcess

        @staticmethod
        def Queue():
            import queue
            return queue.Queue()

    class FakeJob:
        def __init__(self, name):
            self.name = name

        def describe(self):
            return self.name

    ran = []
    monkeypatch.setattr(executors, "execute_job", lambda job, *a, **k: ran.append(job.name) or
                        {"status": "done", "seconds": 0.0})
    monkeypatch.setattr(executors.mp, "get_context", lambda name: FakeContext)
    local = executors.LocalExecutor(workers=6, progress=False)
    local.run([FakeJob("a")], "out", "cpu", "r")
    assert ran == ["a"] and started == []
    local.run([FakeJob("a"), FakeJob("b")], "out", "cpu", "r")
    assert len(started) == 2


# --- Slurm ------------------------------------------------------------------------------------

def test_folded_squeue_output_is_expanded_and_jobs_are_not_resubmitted(tmp_path, monkeypatch):
    from bench.executors import _still_queued, expand_array_ids

    assert expand_array_ids("123_4") == {"123_4"}
    assert expand_array_ids("123_[4-6%2]") == {"123_4", "123_5", "123_6"}
    assert expand_array_ids("123_[1,3,5-6]") == {"123_1", "123_3", "123_5", "123_6"}
    fake = tmp_path / "bin" / "squeue"
    fake.parent.mkdir()
    # squeue as the manual describes it: pending array elements folded onto one line unless -r
    fake.write_text("#!/bin/sh\ncase \" $* \" in *' -r '*) printf '77_0 RUNNING\\n77_1 PENDING\\n"
                    "77_2 PENDING\\n';; *) printf '77_0 RUNNING\\n77_[1-2] PENDING\\n';; esac\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")

    class J:
        def __init__(self, job_id):
            self.job_id = job_id

    jobs = [J(f"job{i}") for i in range(4)]
    submitted = tmp_path / "slurm" / "submitted"
    submitted.mkdir(parents=True)
    for i, job in enumerate(jobs):
        (submitted / f"{job.job_id}.json").write_text(json.dumps({"slurm_job_id": f"77_{i}"}))
    assert _still_queued(str(tmp_path / "slurm"), jobs) == {"job0", "job1", "job2"}
    fake.write_text("#!/bin/sh\nprintf '77_0 RUNNING\\n77_[1-2] PENDING\\n'\n")  # ignores -r
    assert _still_queued(str(tmp_path / "slurm"), jobs) == {"job0", "job1", "job2"}


def test_pickle_is_only_read_from_checksummed_data(tmp_path):
    """The one pickle.load in the package reads CIFAR's batches only after their MD5 matched:
    a batch file replaced by a pickle payload is refused, and the payload never runs."""
    import pickle

    from bench.datasets import torchvision_sets
    from bench.datasets.torchvision_sets import ChecksumError

    marker = tmp_path / "pwned"
    batch = tmp_path / "data_batch_1"
    batch.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ChecksumError):
        torchvision_sets._unpickle("cifar10", batch, "c99cafc152244af753f735de768cd75f")
    assert not marker.exists(), "the payload ran"
