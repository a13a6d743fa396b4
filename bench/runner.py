"""RunSpec -> jobs -> executor -> results store.

`plan` validates everything (names, presets, --set, data) before anything is written; `execute_job`
runs one job in whichever process the executor chose and writes its folder atomically; `run` skips
finished jobs, runs the rest, rebuilds results.csv and returns the rows.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import bench
from bench.config import (
    RunSpec,
    as_dict,
    build_method_config,
    check_overrides,
    load_preset,
    parse_overrides,
    stable_hash,
    training_dict,
)
from bench.datasets import default_data_dir, load_dataset
from bench.errors import BenchError, DataMissingError
from bench.metrics import accuracy, detection_metrics
from bench.protocols import (
    available_ood_sets,
    check_in_distribution,
    get_protocol,
    load_task,
    ood_sets_for,
    tasks,
)
from bench.registry import GENERATED, METHODS
from bench.store import RunStore, file_lock


@dataclass(frozen=True)
class Job:
    """One (method, config, data set, task, seed): trains one model and scores its test groups."""

    job_id: str
    train_id: str
    method: str
    config: Any
    config_hash: str
    protocol: str
    dataset: str
    normal_class: int | None
    ood_sets: tuple[str, ...]
    seed: int
    preset: str
    data_dir: str
    download: bool
    compile: bool = False  # torch.compile the network: how it runs, not what it computes

    def describe(self) -> str:
        where = f"class {self.normal_class}" if self.normal_class is not None else "all classes"
        return f"{self.method} {self.dataset} {self.protocol} {where} seed {self.seed}"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{bench.__version__}+{sha}" if sha else bench.__version__


def method_configs(spec: RunSpec) -> dict[str, Any]:
    """Each method's frozen config: defaults, then preset, then --set."""
    classes = {m: METHODS.load_object(m).Config for m in spec.methods}
    overrides = parse_overrides(spec.overrides)
    check_overrides(overrides, spec.methods, classes)
    preset = load_preset(spec.preset)
    return {m: build_method_config(m, classes[m], preset, overrides) for m in spec.methods}


def check_writable(out: Path) -> None:
    """Fail with exit code 2 (and write nothing) if `out` cannot be created or written."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise BenchError(f"--out {out}: not writable ({probe} is not a writable directory)")
    if out.exists():
        try:
            fd, tmp = tempfile.mkstemp(dir=out, prefix=".write-test-")
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise BenchError(f"--out {out}: not writable ({exc.strerror})") from None


def plan(spec: RunSpec) -> tuple[list[Job], dict[str, dict[str, str]]]:
    """All jobs of the spec, and {dataset: {missing OOD set: reason}}; raises BenchError on bad
    input before anything is written."""
    if not spec.methods:
        raise BenchError("no methods selected")
    for m in spec.methods:
        METHODS.check(m)
    protocol = get_protocol(spec.protocol)
    for m in spec.methods:
        supported = METHODS.load_object(m).protocols
        if spec.protocol not in supported:
            raise BenchError(f"method {m} does not run in protocol {spec.protocol} "
                             f"(it runs in: {', '.join(supported)})")
    for d in spec.datasets:
        check_in_distribution(d)
    if not spec.seeds:
        raise BenchError("no seeds given")
    configs = method_configs(spec)
    data_dir = spec.data_dir or str(default_data_dir())

    missing_messages, datasets_info, skipped = [], {}, {}
    for d in spec.datasets:
        ood = ood_sets_for(d, spec.ood) if protocol.test == "ood" else ()
        try:
            train = load_dataset(d, "train", data_dir, spec.download)
            load_dataset(d, "test", data_dir, spec.download)
        except DataMissingError as exc:
            missing_messages.append(str(exc))
            for name in ood:  # say at once where every missing set goes
                try:
                    if name not in GENERATED:
                        load_dataset(name, "test", data_dir, spec.download)
                except DataMissingError as ood_exc:
                    missing_messages.append(str(ood_exc))
            continue
        if ood:
            ood, skipped[d] = available_ood_sets(d, ood, data_dir, spec.download, spec.strict)
            if not ood:
                raise BenchError(f"{d}: none of its OOD sets is available; " + "; ".join(skipped[d].values()))
        datasets_info[d] = (len(train.classes), ood)
    if missing_messages:
        raise BenchError("\n".join(dict.fromkeys(missing_messages)))

    jobs = []
    for m in spec.methods:
        config = configs[m]
        for d in spec.datasets:
            n_classes, ood = datasets_info[d]
            for task in tasks(spec.protocol, d, n_classes, spec.classes, ood):
                for seed in spec.seeds:
                    jobs.append(make_job(m, config, task, seed, spec.preset, data_dir,
                                         spec.download, spec.compile))
    return jobs, skipped


def make_job(method: str, config: Any, task, seed: int, preset: str, data_dir: str,
             download: bool, compile: bool = False) -> Job:
    base = {"method": method, "protocol": task.protocol, "dataset": task.dataset,
            "normal_class": task.normal_class, "seed": seed}
    train_id = f"{method}-{task.dataset}-{task.protocol}-{task.label}-s{seed}-" + stable_hash(
        {**base, "config": training_dict(config)}, 8)
    job_key = {**base, "config": as_dict(config), "ood_sets": list(task.ood_sets)}
    job_id = f"{method}-{task.dataset}-{task.protocol}-{task.label}-s{seed}-" + stable_hash(job_key, 8)
    return Job(job_id=job_id, train_id=train_id, method=method, config=config,
               config_hash=stable_hash(as_dict(config)), protocol=task.protocol,
               dataset=task.dataset, normal_class=task.normal_class, ood_sets=task.ood_sets,
               seed=seed, preset=preset, data_dir=data_dir, download=download, compile=compile)


def _row_base(job: Job, run_id: str, device: str, n_train: int, train_s: float, eval_s: float,
              detector) -> dict[str, Any]:
    return {
        "run_id": run_id, "job_id": job.job_id, "method": job.method, "protocol": job.protocol,
        "dataset": job.dataset,
        "normal_class": "all" if job.normal_class is None else str(job.normal_class),
        "seed": job.seed, "n_train": n_train, "preset": job.preset,
        "backbone": detector.backbone, "epochs": detector.epochs,
        "train_seconds": round(train_s, 3), "eval_seconds": round(eval_s, 3), "device": device,
        "config_hash": job.config_hash, "code_version": code_version(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def execute_job(job: Job, out: str, device: str = "auto", run_id: str = "",
                progress: bool = True) -> dict[str, Any]:
    """Run one job and write its folder; returns its record. Errors are recorded, not raised."""
    from bench.nn.train import select_device

    store = RunStore(out)
    torch_device = select_device(device)
    record: dict[str, Any] = {
        "job_id": job.job_id, "train_id": job.train_id, "method": job.method,
        "dataset": job.dataset, "protocol": job.protocol,
        "normal_class": job.normal_class, "ood_sets": list(job.ood_sets), "seed": job.seed,
        "preset": job.preset, "config": as_dict(job.config), "config_hash": job.config_hash,
        "device": str(torch_device), "code_version": code_version(), "run_id": run_id,
        "host": os.uname().nodename if hasattr(os, "uname") else "",
    }
    started = time.perf_counter()
    with file_lock(store.job_dir(job.job_id) / ".lock"):  # one worker per job, across processes
        earlier = store.record(job.job_id)
        if earlier and earlier.get("status") == "done":  # finished by another worker meanwhile
            return earlier
        return _execute_locked(job, store, torch_device, run_id, progress, record, started)


def _execute_locked(job: Job, store: RunStore, torch_device, run_id: str, progress: bool,
                    record: dict[str, Any], started: float) -> dict[str, Any]:
    from bench.methods.base import FitContext
    from bench.nn.train import reseed, seed_everything

    try:
        seed_everything(job.seed)
        data = load_task(job_task(job), job.data_dir, job.download)
        detector = METHODS.load_object(job.method)(job.config)
        ctx = FitContext(device=torch_device, seed=job.seed,
                         model_dir=store.model_dir(job.train_id),
                         labeled=get_protocol(job.protocol).labeled, progress=progress,
                         compile=job.compile)
        t0 = time.perf_counter()
        detector.fit(data.train, ctx)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        reseed(job.seed, "score")  # a score-only re-run draws the same test augmentations
        groups = _score_groups(detector, data)
        acc = None
        if detector.predicts_classes and get_protocol(job.protocol).labeled:
            acc = accuracy(data.test.labels.numpy(), detector.predict(data.test.images))
        eval_s = time.perf_counter() - t0
        base = _row_base(job, run_id, str(torch_device), len(data.train), train_s, eval_s, detector)
        rows, arrays = [], {}
        for group, (is_anomaly, scores) in groups.items():
            arrays[f"{group}/is_anomaly"] = is_anomaly.astype(np.int8)
            for score_name, values in scores.items():
                arrays[f"{group}/{score_name}"] = values.astype(np.float32)
                n_anom = int(is_anomaly.sum())
                counts = {"ood_dataset": group, "n_test_normal": len(is_anomaly) - n_anom,
                          "n_test_anomalous": n_anom, "score": score_name}
                for metric, value in detection_metrics(is_anomaly, values).items():
                    rows.append({**base, **counts, "metric": metric, "value": value})
                if acc is not None:
                    rows.append({**base, **counts, "metric": "accuracy", "value": acc})
        record["auroc"] = {r["ood_dataset"] + "/" + r["score"]: round(r["value"], 4)
                           for r in rows if r["metric"] == "auroc"}
        record.update(status="done", train_seconds=round(train_s, 3), eval_seconds=round(eval_s, 3),
                      seconds=round(time.perf_counter() - started, 3), n_train=len(data.train),
                      history=getattr(detector, "history", []))
        store.write_job(job.job_id, record, pd.DataFrame(rows), arrays)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a failing job is recorded; the run goes on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(),
                      seconds=round(time.perf_counter() - started, 3))
        store.write_job(job.job_id, record, None, None)
    return record


def job_task(job: Job):
    from bench.protocols import Task

    return Task(job.protocol, job.dataset, job.normal_class, job.ood_sets)


def _score_groups(detector, data) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """{group: (is_anomaly, {score: values})}: `rest` for one-class, one group per OOD set."""
    test_scores = detector.score(data.test.images)
    if data.test_is_anomaly is not None:
        return {"rest": (data.test_is_anomaly.numpy(), test_scores)}
    out = {}
    for name, ood in data.ood.items():
        ood_scores = detector.score(ood.images)
        is_anomaly = np.concatenate([np.zeros(len(data.test)), np.ones(len(ood))]).astype(bool)
        out[name] = (is_anomaly, {k: np.concatenate([v, ood_scores[k]])
                                  for k, v in test_scores.items()})
    return out


def write_skipped(store: RunStore, skipped: dict[str, dict[str, str]], protocol: str) -> None:
    """A `skipped` record per missing OOD set, so the run directory says what was left out."""
    from bench.store import atomic_write_json

    for dataset, missing in skipped.items():
        for name, reason in missing.items():
            atomic_write_json(store.root / "skipped" / f"{dataset}-{protocol}-{name}.json",
                              {"status": "skipped", "dataset": dataset, "ood_dataset": name,
                               "protocol": protocol, "reason": reason})


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summarize(record: dict[str, Any]) -> str:
    if record["status"] != "done":
        return f"FAILED: {record.get('error', '')}"
    aurocs = record.get("auroc", {})
    shown = ", ".join(f"{k.removeprefix('rest/')} {100 * v:.1f}" for k, v in list(aurocs.items())[:4])
    more = " ..." if len(aurocs) > 4 else ""
    return f"done in {record['seconds']:.1f}s" + (f" (AUROC {shown}{more})" if shown else "")


def run(spec: RunSpec, executor=None, retry_failed: bool = False, notes: list[str] = ()
        ) -> tuple[pd.DataFrame, list[dict]]:
    """Plan, skip what is finished, execute the rest, rebuild results.csv. `notes` are printed
    once the input is known to be valid."""
    from bench.executors import LocalExecutor
    from bench.store import atomic_write_json

    jobs, skipped = plan(spec)
    out = Path(spec.out)
    check_writable(out)
    for note in notes:
        log(note)
    for missing in skipped.values():
        for reason in missing.values():
            log(f"bench: warning: skipping OOD set: {reason}")
    out.mkdir(parents=True, exist_ok=True)
    store = RunStore(out)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + stable_hash(spec.to_json(), 6)
    atomic_write_json(out / "spec.json", {**spec.to_json(), "run_id": run_id})
    write_skipped(store, skipped, spec.protocol)

    todo, done_before = [], 0
    for job in jobs:
        status = store.status(job.job_id)
        if status == "done" or (status == "failed" and not retry_failed):
            done_before += 1
            continue
        todo.append(job)
    if done_before:
        log(f"{done_before} of {len(jobs)} jobs already in {out} (skipped)")
    executor = executor or LocalExecutor()
    executor.run(todo, str(out), spec.device, run_id)
    rows = store.write_results()
    records = [store.record(j.job_id) or {"job_id": j.job_id, "status": "missing"} for j in jobs]
    return rows, records


def replace_out(spec: RunSpec, out: str) -> RunSpec:
    return dataclasses.replace(spec, out=out)
