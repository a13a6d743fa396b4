"""Executors give the same rows; kills resume; concurrent writers keep the store consistent."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

BENCH = [sys.executable, "-m", "bench"]
KEYS = ["method", "score", "protocol", "dataset", "normal_class", "ood_dataset", "seed", "metric"]


def _bench(args, **kw):
    return subprocess.run(BENCH + args, capture_output=True, text=True, **kw)


def _results(out: Path) -> pd.DataFrame:
    rows = pd.read_csv(out / "results.csv", dtype={"normal_class": str})
    return rows.sort_values(KEYS).reset_index(drop=True)[KEYS + ["value", "job_id"]]


MCL_SCORES = 4  # sei, cosnorm and the post-hoc deep-knn, mahalanobis (one class: no rmds)


def _common(out, tiny_args, methods="knn,mcl"):
    return ["run", "--methods", methods, "--datasets", "digits", "--classes", "0,1",
            "--out", str(out), *tiny_args]


def test_workers_print_progress_lines_led_by_their_job(tmp_path, tiny_args):
    """Two workers share the terminal and the log: each job's training progress comes as
    lines led by its job id (workers printed nothing between a job's start and its end)."""
    proc = _bench(["run", "--methods", "mcl", "--datasets", "digits", "--classes", "0,1",
                   "--workers", "2", "--out", str(tmp_path / "run"), *tiny_args], timeout=600)
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(d.name for d in (tmp_path / "run" / "jobs").iterdir())
    assert len(jobs) == 2
    for job_id in jobs:
        assert f"{job_id}: MCL: 0/" in proc.stderr, proc.stderr


def test_lines_mode_prints_lines_on_a_terminal_too(monkeypatch, capsys):
    """A worker's progress is lines even where stderr is a terminal; a single process there
    keeps its bar."""
    from bench.datasets import load_dataset
    from bench.nn import train as engine
    from bench.nn.context import FitContext
    from helpers import tiny

    monkeypatch.setattr(engine, "LOG_SECONDS", 0.0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    data = load_dataset("synthetic", "train")
    normal = data.subset(data.labels == 0)
    for progress in ("lines", True):
        lines = []
        tiny("rotnet", epochs=2).fit(normal, FitContext(progress=progress, log=lines.append))
        steps = [line for line in lines if line.startswith("RotNet: ")]
        assert (len(steps) >= 2) == (progress == "lines"), (progress, lines)

@pytest.mark.slow
def test_local_workers_ray_and_slurm_give_the_same_rows(tmp_path, tiny_args):
    pytest.importorskip("ray")
    pytest.importorskip("submitit")
    # one torch thread everywhere (workers obey OMP_NUM_THREADS too): float sums in the same
    # order, so every executor must give the same numbers
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    local = _bench(_common(tmp_path / "local", tiny_args), env=env)
    assert local.returncode == 0, local.stderr
    expected = _results(tmp_path / "local")
    assert len(expected) == (1 + MCL_SCORES) * 2 * 4

    pool = _bench(_common(tmp_path / "pool", tiny_args) + ["--workers", "2"], env=env)
    assert pool.returncode == 0, pool.stderr
    ray = _bench(_common(tmp_path / "ray", tiny_args) + ["--executor", "ray", "--workers", "2"],
                 env=env)
    assert ray.returncode == 0, ray.stderr
    slurm = _bench(_common(tmp_path / "slurm", tiny_args) + ["--executor", "slurm-local"],
                   env=env)
    assert slurm.returncode == 0, slurm.stderr
    assert "submitted 4 jobs as a job array" in slurm.stderr
    for name in ("pool", "ray", "slurm"):
        got = _results(tmp_path / name)
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)


@pytest.mark.slow
def test_slurm_no_wait_then_collect(tmp_path, tiny_args):
    pytest.importorskip("submitit")
    args = _common(tmp_path / "run", tiny_args) + ["--executor", "slurm-local"]
    first = _bench(args + ["--no-wait"])
    assert first.returncode == 0, first.stderr
    assert "--no-wait" in first.stderr
    deadline = time.time() + 120
    while time.time() < deadline:  # submitit's local jobs finish in the background
        records = list((tmp_path / "run" / "jobs").glob("*/record.json"))
        if len(records) == 4:
            break
        time.sleep(0.5)
    second = _bench(args)
    assert second.returncode == 0, second.stderr
    assert "4 of 4 jobs already in" in second.stderr
    assert len(pd.read_csv(tmp_path / "run" / "results.csv")) == (1 + MCL_SCORES) * 2 * 4


@pytest.mark.slow
def test_sigkill_during_training_then_resume(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--methods", "mcl", "--datasets", "synthetic", "--classes", "0",
            "--out", str(out), "--set", "backbone=resnet-tiny", "--set", "epochs=80",
            "--set", "checkpoint_every=1", "--set", "batch_size=16", "--set", "proj_hidden=16",
            "--set", "proj_dim=8"]
    proc = subprocess.Popen(BENCH + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    checkpoint = None
    while time.time() < deadline and checkpoint is None:
        found = list(out.glob("models/*/checkpoint.pt"))
        checkpoint = found[0] if found else None
        time.sleep(0.05)
    assert checkpoint is not None, "training never wrote a checkpoint"
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(out.glob("jobs/*/record.json")), "the job finished before the kill"

    again = _bench(args)
    assert again.returncode == 0, again.stderr
    assert "resuming MCL from epoch" in again.stderr
    rows = pd.read_csv(out / "results.csv")
    assert set(rows["score"]) == {"cosnorm", "sei", "deep-knn", "mahalanobis"}
    assert len(rows) == MCL_SCORES * 4
    assert not list(out.glob("models/*/checkpoint.pt"))  # superseded by model.pt
    assert list(out.glob("models/*/model.pt"))


@pytest.mark.slow
def test_two_runs_writing_one_directory_at_once(tmp_path, tiny_args):
    out = tmp_path / "shared"
    args_a = _common(out, tiny_args, "knn,mcl")
    args_b = ["run", "--methods", "mcl,ocsvm", "--datasets", "digits", "--classes", "0,1",
              "--out", str(out), *tiny_args]
    a = subprocess.Popen(BENCH + args_a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(BENCH + args_b, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert a.wait() == 0 and b.wait() == 0, (a.stderr.read(), b.stderr.read())
    rows = pd.read_csv(out / "results.csv", dtype={"normal_class": str})
    # knn, mcl, ocsvm on 2 classes; every job once, every row once
    assert len(rows) == (1 + MCL_SCORES + 1) * 2 * 4
    assert not rows.duplicated(KEYS).any()
    jobs = list((out / "jobs").iterdir())
    assert len(jobs) == 6
    assert not list(out.rglob("*.tmp"))


def test_threads_per_worker_split_the_cores_and_obey_omp_num_threads(monkeypatch):
    from bench import executors
    from bench.executors import threads_per_worker

    monkeypatch.setattr(executors, "cores", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [threads_per_worker(w) for w in (1, 2, 3, 32)] == [16, 8, 5, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert [threads_per_worker(w) for w in (1, 2, 16)] == [2, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert threads_per_worker(4) == 4


BARRIER = '''
import os, time
import numpy as np
import bench


class Barrier(bench.Detector):
    """Waits in fit until two jobs have started (the plan-time check has no model folder)."""

    scores = ("zero",)

    def fit(self, train, ctx):
        if ctx.model_dir is not None:
            folder = os.environ["BARRIER_DIR"]
            open(os.path.join(folder, f"{os.getpid()}-{ctx.seed}"), "w").close()
            deadline = time.time() + 60
            while len(os.listdir(folder)) < 2:
                if time.time() > deadline:
                    raise RuntimeError("the other job never started: one job at a time")
                time.sleep(0.05)
        return self

    def score(self, images):
        return {"zero": np.arange(len(images), dtype=float)}
'''


def test_jobs_per_device_runs_that_many_jobs_at_once_on_one_device(tmp_path):
    (tmp_path / "barrier.py").write_text(BARRIER)
    (tmp_path / "b").mkdir()
    env = {**os.environ, "BARRIER_DIR": str(tmp_path / "b")}
    out = tmp_path / "run"
    done = _bench(["run", "--methods", f"{tmp_path / 'barrier.py'}:Barrier", "--datasets",
                   "digits", "--classes", "0", "--seeds", "0,1", "--device", "cpu",
                   "--jobs-per-device", "2", "--out", str(out)], env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    started = os.listdir(tmp_path / "b")
    assert len({name.split("-")[0] for name in started}) == 2  # two processes, at once


def test_jobs_per_device_spreads_workers_over_the_gpus(monkeypatch):
    import torch

    from bench.errors import BenchError
    from bench.executors import make_executor

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ex = make_executor("local", devices="all", jobs_per_device=2)
    assert ex.devices == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"] and ex.workers == 4
    ex = make_executor("local", jobs_per_device=3)  # no --devices: every visible GPU
    assert ex.devices == ["cuda:0", "cuda:1"] * 3
    assert make_executor("local", jobs_per_device=2, device="cpu").devices == ["cpu", "cpu"]
    with pytest.raises(BenchError, match="give one of them"):
        make_executor("local", workers=2, jobs_per_device=2)
    with pytest.raises(BenchError, match="at least 1"):
        make_executor("local", jobs_per_device=0)


@pytest.mark.slow
def test_slurm_tasks_hold_jobs_per_device_jobs(tmp_path, tiny_args):
    pytest.importorskip("submitit")
    import json

    out = tmp_path / "run"
    done = _bench(["run", "--methods", "knn", "--datasets", "digits", "--classes", "0,1,2",
                   "--out", str(out), "--executor", "slurm-local", "--jobs-per-device", "2"])
    assert done.returncode == 0, done.stderr
    assert "submitted 3 jobs as a job array of 2 tasks" in done.stderr
    tasks = [json.loads(p.read_text())["slurm_job_id"]
             for p in (out / "slurm" / "submitted").glob("*.json")]
    assert len(tasks) == 3 and len(set(tasks)) == 2
    assert len(pd.read_csv(out / "results.csv")["job_id"].unique()) == 3
