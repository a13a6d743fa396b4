"""A Job (one method, config, data set, task and seed), its identity, and `execute_job`, which
runs it in whichever process an executor chose and writes its folder atomically.

Rows are built from scores by a pure function (`rows_from_scores`). This module imports neither
the runner nor the executors: both import it.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import bench
from bench.config import as_dict, stable_hash, training_dict
from bench.errors import FileError
from bench.files import file_lock
from bench.metrics import accuracy, detection_metrics
from bench.protocols import (
    DEFAULT_TABLE,
    PROTOCOL_VERSION,
    Task,
    benchmark,
    get_protocol,
    load_task,
    table_metrics,
)
from bench.registry import DATASETS, METHODS, method_class
from bench.store import RunStore

EMBEDDING_POINTS = 2000  # test images whose embeddings a job keeps for figures (t-SNE)
PIXEL = "pixel"


@dataclass(frozen=True)
class Job:
    """One (method, config, data set, task, seed): trains one model and scores its test groups.

    A classical method on learned features names the encoder (`features`), its config and the
    folder of its trained model (`encoder_train_id`), shared with the encoder's own jobs.
    """

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
    variant: str = ""  # the --set assignments that made this config ('' for none)
    features: str = PIXEL  # classical methods: "pixel" or the encoder's method name
    encoder_config: Any = None
    encoder_train_id: str = ""
    compile: str = ""  # torch.compile's mode, '' for eager: how it runs, not part of the identity
    precision: str = "auto"  # likewise (recorded in every row)
    deterministic: bool = False  # likewise
    log: tuple[str, ...] = ()  # trackers the finished job is logged to (bench/trackers.py)
    log_uri: str = ""
    ood_table: str = DEFAULT_TABLE  # which table's OOD sets (and, for OpenOOD's, test images)
    checkpoint: str = ""  # a trained network to score instead of training (its SHA-256 is in
    encoder_checkpoint: str = ""  # the ids); the same for the encoder of a classical method
    checkpoint_sha256: str = ""  # checked against the bytes the job loads
    encoder_checkpoint_sha256: str = ""
    # what the method's files were when the run was planned (pretrained weights' hash): a job
    # whose files changed since then fails instead of scoring them under the old ids
    planned_identity: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        where = f"class {self.normal_class}" if self.normal_class is not None else "all classes"
        on = f" on {self.features} features" if self.features != PIXEL else ""
        variant = f" [{self.variant}]" if self.variant else ""
        return f"{self.method}{on}{variant} {self.dataset} {self.protocol} {where} seed {self.seed}"

    @property
    def task(self) -> Task:
        return Task(self.protocol, self.dataset, self.normal_class, self.ood_sets, self.ood_table)

    def __reduce__(self):
        """Pickled as plain data (configs as dicts) and the folders of its plugins: a worker,
        Ray task or Slurm job rebuilds it by import path, never unpickling a user's class."""
        import dataclasses

        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["config"] = as_dict(self.config)
        if self.encoder_config is not None:
            fields["encoder_config"] = as_dict(self.encoder_config)
        folders = []
        for name in (self.method, self.features, self.dataset):
            for registry in (METHODS, DATASETS):
                plugin = registry.plugin(name) if name in registry else None
                if plugin is not None and plugin.path:
                    folders.append(plugin.path)
        return _rebuild_job, (fields, tuple(dict.fromkeys(folders)))


def _rebuild_job(fields: dict[str, Any], folders: tuple[str, ...]) -> Job:
    """A Job from `Job.__reduce__`'s data: plugin folders on the Python path, then each config
    built by its method's class (found by name, plugins by import path)."""
    import sys

    for folder in folders:
        if folder not in sys.path:
            sys.path.insert(0, folder)
    fields = dict(fields)
    fields["config"] = _config_of(fields["method"], fields["config"])
    if fields["encoder_config"] is not None:
        fields["encoder_config"] = _config_of(fields["features"], fields["encoder_config"])
    return Job(**fields)


def _config_of(method: str, values: dict[str, Any]) -> Any:
    return method_class(method).Config(**values)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{bench.__version__}+{sha}" if sha else bench.__version__


def _identity(method: str, config: Any) -> dict[str, str]:
    """What a method adds to the identity of its jobs beyond its config (pretrained weights:
    their name and hash, as its class declares; a plugin: its import path and version)."""
    identity = getattr(method_class(method), "identity", None)
    out = identity(config) if identity is not None else {}
    plugin = METHODS.plugin(method) if method in METHODS else None
    return {**out, **plugin.identity()} if plugin is not None else out


def code_version_of(job: Job) -> str:
    """The code that made a job's rows: bench's version, and a plugin's (its distribution's
    version, or its file's hash)."""
    versions = [code_version()]
    for name in (job.method, job.features):
        plugin = METHODS.plugin(name) if name in METHODS else None
        if plugin is not None:
            versions.append(f"{plugin.target}={plugin.version}")
    return " ".join(versions)


def id_prefix(name: str) -> str:
    """A method's name as the start of a folder name (a plugin's ':' becomes '.')."""
    return name.replace(":", ".")


def train_id_of(method: str, config: Any, task: Task, seed: int, checkpoint_sha256: str = "",
                identity: dict[str, str] | None = None) -> str:
    """The model folder's name: everything that changes the trained weights (an imported
    network: its file's SHA-256; pretrained weights: theirs; `identity`: the method's
    `_identity`, when the caller has it already)."""
    identity = _identity(method, config) if identity is None else identity
    base = {"method": method, "protocol": task.protocol, "dataset": task.dataset,
            "normal_class": task.normal_class, "seed": seed, **identity}
    if checkpoint_sha256:
        base["checkpoint_sha256"] = checkpoint_sha256
    return (f"{id_prefix(method)}-{id_prefix(task.dataset)}-{task.protocol}-{task.label}-s{seed}-"
            + stable_hash({**base, "config": training_dict(config)}, 8))


def make_job(method: str, config: Any, task: Task, seed: int, preset: str, data_dir: str,
             download: bool, *, variant: str = "", features: str = PIXEL,
             encoder_config: Any = None, compile: str = "", precision: str = "auto",
             deterministic: bool = False, checkpoints: dict[str, tuple[str, str]] | None = None,
             log: tuple[str, ...] = (), log_uri: str = "") -> Job:
    """`checkpoints`: {method: (path, SHA-256)} of imported networks."""
    checkpoints = checkpoints or {}
    own, enc = checkpoints.get(method, ("", "")), checkpoints.get(features, ("", ""))
    base = {"method": method, "protocol": task.protocol, "dataset": task.dataset,
            "normal_class": task.normal_class, "seed": seed}
    if own[1]:
        base["checkpoint_sha256"] = own[1]
    own_identity = _identity(method, config)  # once: it may hash a weights file
    enc_identity = _identity(features, encoder_config) if features != PIXEL else {}
    base.update(own_identity)
    job_key = {**base, "config": as_dict(config), "ood_sets": list(task.ood_sets)}
    if benchmark(task.ood_table).named:  # the same set names, other images
        job_key["ood_table"] = task.ood_table
    if get_protocol(task.protocol).uses_ood_sets and benchmark(task.ood_table).tunes(
            task.dataset):  # settings chosen on its validation lists
        job_key["tuning"] = benchmark(task.ood_table).tuning
    if variant:  # the same config reached by two sweeps is two entries (one model, shared)
        job_key["variant"] = variant
    encoder_train_id = ""
    prefix = id_prefix(method)
    if features != PIXEL:
        job_key["features"] = {"encoder": features, "config": training_dict(encoder_config)}
        if enc[1]:
            job_key["features"]["checkpoint_sha256"] = enc[1]
        job_key["features"].update(enc_identity)
        encoder_train_id = train_id_of(features, encoder_config, task, seed, enc[1],
                                       enc_identity)
        prefix = f"{id_prefix(method)}-{id_prefix(features)}feat"
    job_id = f"{prefix}-{id_prefix(task.dataset)}-{task.protocol}-{task.label}-s{seed}-" + stable_hash(
        job_key, 8)
    return Job(job_id=job_id, train_id=train_id_of(method, config, task, seed, own[1],
                                                   own_identity),
               method=method,
               config=config, config_hash=stable_hash(as_dict(config)), protocol=task.protocol,
               dataset=task.dataset, normal_class=task.normal_class, ood_sets=task.ood_sets,
               seed=seed, preset=preset, data_dir=data_dir, download=download, variant=variant,
               features=features, encoder_config=encoder_config,
               encoder_train_id=encoder_train_id, compile=compile, precision=precision,
               deterministic=deterministic, ood_table=task.ood_table, checkpoint=own[0],
               encoder_checkpoint=enc[0] if features != PIXEL else "",
               checkpoint_sha256=own[1],
               encoder_checkpoint_sha256=enc[1] if features != PIXEL else "",
               planned_identity=identity_pairs(own_identity, enc_identity), log=tuple(log),
               log_uri=log_uri)


def identity_pairs(own: dict[str, str], encoder: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The identity of a job's files (the method's, and its encoder's with an ``encoder_``
    prefix), as sorted pairs."""
    items = {**own, **{f"encoder_{k}": v for k, v in encoder.items()}}
    return tuple(sorted((str(k), str(v)) for k, v in items.items()))


# --- rows from scores (pure) -------------------------------------------------------------------

def row_base(job: Job, *, run_id: str, device: str, precision: str, n_train: int,
             train_seconds: float, eval_seconds: float, backbone: str, epochs: int,
             created_at: str, code: str) -> dict[str, Any]:
    """The columns every row of a job shares."""
    return {
        "run_id": run_id, "job_id": job.job_id, "method": job.method,
        "features": features_label(job),
        "variant": job.variant, "protocol": job.protocol, "protocol_version": PROTOCOL_VERSION,
        "ood_table": job.ood_table if get_protocol(job.protocol).uses_ood_sets else "",
        "dataset": job.dataset,
        "normal_class": "all" if job.normal_class is None else str(job.normal_class),
        "seed": job.seed, "n_train": n_train, "preset": job.preset, "backbone": backbone,
        "epochs": epochs, "precision": precision, "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3), "device": device,
        "config_hash": job.config_hash, "code_version": code, "created_at": created_at,
    }


def features_label(job: Job) -> str:
    """What a classical method saw: ``pixel`` or ``<encoder>:penultimate``; '' for a method that
    scores with its own network."""
    if job.features != PIXEL:
        return f"{job.features}:penultimate"
    return PIXEL if METHODS.kind(job.method) == "classical" else ""


def rows_from_scores(base: dict[str, Any],
                     groups: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]],
                     acc: float | None = None, tuned: dict[str, str] | None = None,
                     tuning: str = "") -> list[dict[str, Any]]:
    """Tidy rows: per test group and score variant, every metric (and accuracy if given);
    `tuned`: {score: the setting chosen on validation images by `tuning`}."""
    rows = []
    tuned = tuned or {}
    for group, (is_anomaly, scores) in groups.items():
        n_anom = int(is_anomaly.sum())
        for score_name, values in scores.items():
            counts = {"ood_dataset": group, "n_test_normal": len(is_anomaly) - n_anom,
                      "n_test_anomalous": n_anom, "score": score_name,
                      "tuning": tuning if score_name in tuned else "",
                      "setting": tuned.get(score_name, "")}
            extra = table_metrics(base.get("ood_table", ""))
            for metric, value in detection_metrics(is_anomaly, values, extra).items():
                rows.append({**base, **counts, "metric": metric, "value": value})
            if acc is not None:
                rows.append({**base, **counts, "metric": "accuracy", "value": acc})
    return rows


def score_arrays(groups: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]
                 ) -> dict[str, np.ndarray]:
    """What scores.npz keeps: `<group>/is_anomaly` and `<group>/<score>`."""
    arrays = {}
    for group, (is_anomaly, scores) in groups.items():
        arrays[f"{group}/is_anomaly"] = is_anomaly.astype(np.int8)
        for score_name, values in scores.items():
            arrays[f"{group}/{score_name}"] = values.astype(np.float32)
    return arrays


def score_groups(detector, data) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
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


def embedding_sample(detector, data, seed: int = 0) -> dict[str, np.ndarray] | None:
    """Penultimate features of up to EMBEDDING_POINTS test images (and of up to a quarter as many
    per OOD set) with their group names: what `bench figures` draws a t-SNE from."""
    if not hasattr(detector, "embed"):
        return None
    rng = np.random.default_rng(seed)
    test = data.test.images
    keep = np.sort(rng.choice(len(test), min(EMBEDDING_POINTS, len(test)), replace=False))
    feats = [detector.embed(test[keep])]
    if data.test_is_anomaly is not None:
        groups = [np.where(data.test_is_anomaly.numpy()[keep], "anomalous", "normal")]
    else:
        groups = [np.full(len(keep), "in-distribution")]
        for name, ood in data.ood.items():
            pick = np.sort(rng.choice(len(ood), min(EMBEDDING_POINTS // 4, len(ood)),
                                      replace=False))
            feats.append(detector.embed(ood.images[pick]))
            groups.append(np.full(len(pick), name))
    return {"features": np.concatenate(feats).astype(np.float32),
            "group": np.concatenate(groups).astype(str)}


# --- running a job -----------------------------------------------------------------------------

def build_detector(job: Job):
    """The job's detector: the method itself, or a classical method on an encoder's features."""
    if job.features == PIXEL:
        return method_class(job.method)(job.config)
    from bench.methods.classical import FeaturesConfig, OnFeatures

    return OnFeatures(FeaturesConfig(job.method, job.config, job.features, job.encoder_config))


def execute_job(job: Job, out: str, device: str = "auto", run_id: str = "",
                progress: bool | str = True) -> dict[str, Any]:
    """Run one job and write its folder; returns its record. A failure of the job is recorded,
    not raised; one of the run directory itself (FileError: disk full, no permission) is raised,
    since no later job could be written either. `progress`: True (a bar on a terminal, lines
    in a log), "lines" (lines, each led by the job id: a worker among others) or False."""
    from bench.nn.devices import describe_machine, select_device

    store = RunStore(out)
    torch_device = select_device(device)
    own = _identity(job.method, job.config)  # pretrained weights: their name and hash, now
    enc = _identity(job.features, job.encoder_config) if job.features != PIXEL else {}
    record: dict[str, Any] = {
        "job_id": job.job_id, "train_id": job.train_id, "method": job.method,
        "features": job.features, "encoder_train_id": job.encoder_train_id,
        "variant": job.variant, "dataset": job.dataset, "protocol": job.protocol,
        "protocol_version": PROTOCOL_VERSION, "normal_class": job.normal_class,
        "ood_sets": list(job.ood_sets), "seed": job.seed, "preset": job.preset,
        "config": as_dict(job.config), "config_hash": job.config_hash,
        "data_dir": job.data_dir, "device": str(torch_device), "code_version": code_version_of(job),
        "checkpoint": job.checkpoint,
        "run_id": run_id, "host": os.uname().nodename if hasattr(os, "uname") else "",
        "machine": describe_machine(torch_device),
        **own, **{f"encoder_{k}": v for k, v in enc.items()},
    }
    started = time.perf_counter()
    with file_lock(store.job_dir(job.job_id) / ".lock"):  # one worker per job, across processes
        earlier = store.record(job.job_id)
        if earlier and earlier.get("status") == "done" and not store.damaged_files(job.job_id):
            return earlier  # finished by another worker meanwhile
        try:
            rows, groups, embedding = _run(job, store, torch_device, run_id, progress, record,
                                           identity_pairs(own, enc))
            record.update(status="done", seconds=round(time.perf_counter() - started, 3))
            store.write_job(job.job_id, record, pd.DataFrame(rows), score_arrays(groups),
                            embedding)
            if job.log:
                _log_to_trackers(job, record, pd.DataFrame(rows), store)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a failing job is recorded; the run goes on
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                          error_kind=error_kind(exc), traceback=traceback.format_exc(),
                          seconds=round(time.perf_counter() - started, 3))
            store.write_job(job.job_id, record, None, None)
            if isinstance(exc, FileError):
                raise
    return record


def _run(job: Job, store: RunStore, torch_device, run_id: str, progress: bool | str,
         record: dict[str, Any], now: tuple[tuple[str, str], ...] = ()
         ) -> tuple[list[dict], dict, dict | None]:
    """Train (or load) and score one job: its rows, score groups and embedding sample; the
    record gets the precision, timings, AUROCs and training history. `now`: the identity of
    its files as they are now, which must be the planned one."""
    from bench.console import log as log_line
    from bench.nn import precision as precision_policy
    from bench.nn.context import FitContext
    from bench.nn.state import reseed, seed_everything

    if job.planned_identity and now != job.planned_identity:
        changed = [k for (k, v) in job.planned_identity if dict(now).get(k) != v]
        from bench.errors import BenchError

        raise BenchError(f"{', '.join(changed)} changed since the run was planned (another file "
                         "than the one in the job id); run again to plan with the new file")

    def log(line: str) -> None:  # a worker's lines say whose they are
        log_line(f"{job.job_id}: {line}" if progress == "lines" else line)

    record["precision"] = ""
    policy = precision_policy.resolve(job.precision, torch_device)
    record["precision"] = policy.describe()
    if job.deterministic:
        make_deterministic()
    record["cudnn_benchmark"] = use_cudnn_autotuner(torch_device, job.deterministic)
    if job.compile:  # each job compiles afresh: the recompile limit counts across the process
        import torch

        torch._dynamo.reset()
    seed_everything(job.seed)
    data = load_task(job.task, job.data_dir, job.download)
    ctx = FitContext(device=torch_device, seed=job.seed, model_dir=store.model_dir(job.train_id),
                     encoder_model_dir=(store.model_dir(job.encoder_train_id)
                                        if job.encoder_train_id else None),
                     labeled=get_protocol(job.protocol).labeled, progress=progress,
                     compile=job.compile, precision=policy, log=log,
                     checkpoint=job.checkpoint, encoder_checkpoint=job.encoder_checkpoint,
                     checkpoint_sha256=job.checkpoint_sha256,
                     encoder_checkpoint_sha256=job.encoder_checkpoint_sha256)
    detector = build_detector(job)
    t0 = time.perf_counter()
    detector.fit(data.train, ctx)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tuned = {}
    if data.tuning is not None:  # settings chosen on validation images, before any test image
        reseed(job.seed, "tune")
        choices = detector.tune(data.tuning[0].images, data.tuning[1].images)
        record["tuned"] = {name: c.record() for name, c in choices.items()}
        tuned = {name: c.record()["setting"] for name, c in choices.items() if c.tuned}
    reseed(job.seed, "score")  # a score-only re-run draws the same test augmentations
    groups = score_groups(detector, data)
    _check_scores(job, detector, groups, ctx.labeled and len(data.train.classes) > 1)
    acc = None
    if detector.predicts_classes and get_protocol(job.protocol).labeled:
        acc = accuracy(data.test.labels.numpy(), detector.predict_class(data.test.images))
    eval_s = time.perf_counter() - t0
    embedding = embedding_sample(detector, data)
    base = row_base(job, run_id=run_id, device=str(torch_device), precision=policy.name,
                    n_train=len(data.train), train_seconds=train_s, eval_seconds=eval_s,
                    backbone=detector.backbone, epochs=detector.epochs,
                    created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    code=code_version_of(job))
    rows = rows_from_scores(base, groups, acc, tuned, benchmark(job.ood_table).tuning)
    record["auroc"] = record_aurocs(rows)
    record.update(train_seconds=round(train_s, 3), eval_seconds=round(eval_s, 3),
                  n_train=len(data.train), history=getattr(detector, "history", []))
    return rows, groups, embedding


def _log_to_trackers(job: Job, record: dict[str, Any], rows: pd.DataFrame, store: RunStore
                     ) -> None:
    """The finished job to its trackers; a tracker's failure is a warning, the job stays done."""
    from bench.console import warn
    from bench.trackers import log_job

    try:
        log_job(job.log, job, record, rows, store.job_dir(job.job_id), store.root, job.log_uri)
    except Exception as exc:  # noqa: BLE001 - the results are written; only the log is lost
        warn(f"{job.job_id}: not logged to {', '.join(job.log)} ({type(exc).__name__}: {exc})")


def record_aurocs(rows: list[dict[str, Any]]) -> dict[str, float]:
    """{group/score: AUROC} of a job's rows for its record and job line: unrounded, so the one
    rounding is where it is shown (`console.percent`), as in the leaderboards."""
    return {r["ood_dataset"] + "/" + r["score"]: r["value"] for r in rows if r["metric"] == "auroc"}


def _check_scores(job: Job, detector, groups: dict, labeled: bool) -> None:
    """The scores a job returned are the ones its detector declares (a plugin's too)."""
    from bench.errors import BenchError
    from bench.methods.base import undeclared

    declared = type(detector).declared_scores(detector.config, labeled)
    for _, scores in groups.values():
        wrong = undeclared(scores, declared)
        if wrong:
            raise BenchError(f"method {job.method}: score() {wrong}")


def use_cudnn_autotuner(device, deterministic: bool) -> bool:
    """cuDNN's autotuner on CUDA (a job's batch shapes are fixed: each is tuned once), off
    under --deterministic; whether it is on goes into the job's record."""
    import torch

    on = device.type == "cuda" and not deterministic
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = on
    return on


def make_deterministic() -> None:
    """Deterministic kernels (cuDNN, cuBLAS workspace, torch's algorithms): with the mean-pool
    head, a resumed CUDA run then ends with the same weights as an uninterrupted one."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def error_kind(exc: BaseException) -> str:
    """``environment`` for failures of the machine rather than the job (no CUDA, out of memory,
    a device error, a file the run could not write), which a later run retries by itself; ``job``
    otherwise."""
    if isinstance(exc, FileError):  # the run directory could not be written (disk full ...)
        return "environment"
    text = f"{type(exc).__name__}: {exc}".lower()
    markers = ("cuda", "out of memory", "no kernel image", "device-side", "cudnn", "nccl",
               "torch not compiled", "no space left")
    return "environment" if any(m in text for m in markers) else "job"
