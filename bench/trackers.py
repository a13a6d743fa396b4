"""Experiment trackers (`--log tensorboard`, `--log mlflow`): each finished job's config, its
per-epoch loss, learning rate and throughput, its final metrics and its files, in the
tracker's own layout. Optional extras; a job is logged once, when its folder is written, so a
resumed or skipped job is never logged twice.

    TensorBoard: <out>/tensorboard/<job id>/ (event files; `tensorboard --logdir <out>/tensorboard`)
    MLflow:      a local SQLite store, <out>/mlflow.db with artifacts under <out>/mlartifacts
                 (or `--log-uri`), experiment = the run directory's name, one MLflow run per
                 job (run name = the job id); `mlflow ui --backend-store-uri sqlite:///...`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.errors import BenchError

TRACKERS = {
    # name: (the module that must import, the extra that installs it)
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
}


def parse(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """--log's value: tracker names (comma-separated or repeated); BenchError naming the ones
    that exist, or the `pip install` a missing library needs."""
    import importlib.util

    from bench.errors import unknown_name

    if not value:
        return ()
    items = value.split(",") if isinstance(value, str) else [x for v in value for x in
                                                              str(v).split(",")]
    names = tuple(dict.fromkeys(n.strip() for n in items if n.strip()))
    for name in names:
        if name not in TRACKERS:
            raise unknown_name("--log tracker", name, TRACKERS)
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise BenchError(f"--log {name} needs {module}: pip install 'mcl-bench[{extra}]'")
    return names


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A config as flat string parameters (nested values as JSON)."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return out


def _final_metrics(rows) -> dict[str, float]:
    """{metric/group/score: value} of a job's rows (group: the OOD set or `rest`)."""
    return {f"{r.metric}/{r.ood_dataset}/{r.score}": float(r.value)
            for r in rows.itertuples()}


def log_job(names: tuple[str, ...], job, record: dict[str, Any], rows, job_dir: Path,
            out: Path, uri: str = "") -> None:
    """Log one finished job to each named tracker."""
    for name in names:
        if name == "tensorboard":
            _tensorboard(job, record, rows, job_dir, out)
        elif name == "mlflow":
            _mlflow(job, record, rows, job_dir, out, uri)


def _no_links_below(folder: Path) -> None:
    """BenchError if a symbolic link sits anywhere under `folder` (a tracker would write
    through it, outside the run directory)."""
    import os

    from bench.files import no_links

    no_links(folder.parent, folder.name)
    for root, dirs, files in os.walk(folder):  # os.walk does not follow links
        for name in dirs + files:
            no_links(Path(root), name)


def _tensorboard(job, record, rows, job_dir: Path, out: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from bench.files import no_links, safe_component

    log_dir = no_links(out, "tensorboard", safe_component(job.job_id, "job id"))
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        writer.add_text("config", "```\n" + json.dumps(record.get("config", {}), indent=1,
                                                         default=str) + "\n```")
        writer.add_text("job", f"{job.describe()} ({record.get('code_version', '')})")
        for h in record.get("history", []):
            step = int(h["epoch"])
            for key in ("loss", "lr", "images_per_second"):
                if key in h:
                    writer.add_scalar(f"train/{key}", float(h[key]), step)
        for name, value in _final_metrics(rows).items():
            writer.add_scalar(name, value, 0)
        figure = _loss_figure(record.get("history", []), job.job_id)
        if figure is not None:
            writer.add_figure("train/loss_curve", figure, 0)
    finally:
        writer.close()


def _mlflow(job, record, rows, job_dir: Path, out: Path, uri: str) -> None:
    from mlflow.tracking import MlflowClient

    from bench.files import no_links

    if not uri:  # the local store: its database and artifacts stay inside the run directory
        no_links(out, "mlflow.db")
        _no_links_below(out / "mlartifacts")
    tracking = uri or f"sqlite:///{(out / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=tracking)
    name = out.resolve().name or "bench"
    found = client.get_experiment_by_name(name)
    experiment = found.experiment_id if found else client.create_experiment(
        name, artifact_location=None if uri else (out / "mlartifacts").resolve().as_uri())
    run = client.create_run(experiment, run_name=job.job_id,
                            tags={"bench.job_id": job.job_id, "bench.method": job.method,
                                  "bench.code_version": str(record.get("code_version", ""))})
    run_id = run.info.run_id
    try:
        params = _flat(record.get("config", {}))
        params.update({"job.protocol": job.protocol, "job.dataset": job.dataset,
                       "job.normal_class": str(job.normal_class), "job.seed": str(job.seed),
                       "job.preset": job.preset})
        for key, value in params.items():
            client.log_param(run_id, key, str(value)[:6000])
        for h in record.get("history", []):
            step = int(h["epoch"])
            for key in ("loss", "lr", "images_per_second"):
                if key in h:
                    client.log_metric(run_id, f"train_{key}", float(h[key]), step=step)
        for metric, value in _final_metrics(rows).items():
            client.log_metric(run_id, metric, value)
        for file in ("rows.csv", "record.json"):
            if (job_dir / file).is_file():
                client.log_artifact(run_id, str(job_dir / file))
        figure = _loss_figure(record.get("history", []), job.job_id)
        if figure is not None:
            client.log_figure(run_id, figure, "loss_curve.png")
        client.set_terminated(run_id)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise


def _loss_figure(history: list[dict[str, Any]], title: str):
    """The job's training loss per epoch (matplotlib), None without a history."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig
