"""The ``bench`` command: run, list, leaderboard, figures, compare, data."""

from __future__ import annotations

import sys
import warnings

import click

from bench.errors import BenchError


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    return items or None


def _ints(value: str | None, flag: str) -> tuple[int, ...] | None:
    """``0,1,2`` or ranges like ``0-4``."""
    items = _split(value)
    if items is None:
        return None
    out: list[int] = []
    for item in items:
        try:
            if "-" in item[1:]:
                lo, hi = item.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(item))
        except ValueError:
            raise BenchError(f"{flag} {value!r}: expected integers like 0,1,2 or 0-4") from None
    return tuple(dict.fromkeys(out))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mcl-bench")
def cli() -> None:
    """Benchmark self-supervised anomaly and OOD detectors: MCL, CSI, SimCLR, Rot, PyOD.

    \b
    bench run                                  embedded default: one-class digits, quick preset
    bench run --methods mcl,csi --datasets cifar10 --preset paper
    bench run --protocol ood --datasets fashion-mnist --methods mcl,csi
    bench list methods
    bench leaderboard --runs runs
    bench figures --runs runs
    bench compare --runs runs
    """


@cli.command()
@click.option("--methods", help="Comma-separated methods (default: every method of the protocol). "
              "See `bench list methods`.")
@click.option("--datasets", default="digits", show_default=True,
              help="Comma-separated normal / in-distribution data sets.")
@click.option("--protocol", default="one-class", show_default=True,
              help="one-class, ood or ood-labeled.")
@click.option("--classes", help="One-class: normal classes to run, e.g. 0,3 or 0-4 (default all).")
@click.option("--seeds", default="0", show_default=True, help="Seeds, e.g. 0,1,2 or 0-4.")
@click.option("--preset", default="auto", show_default=True,
              help="quick (CPU minutes), paper (the papers' settings) or auto (paper on CUDA).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field: mcl.alpha=0.1, or epochs=5 for every method.")
@click.option("--out", default="runs", show_default=True, help="Run directory.")
@click.option("--data-dir", default=None,
              help="Data folder (default $BENCH_DATA, else ~/.cache/mcl-bench/data).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--download/--no-download", default=True, show_default=True,
              help="Allow downloading missing torchvision data sets (checksummed).")
@click.option("--ood", help="OOD protocols: comma-separated OOD sets (default: the protocol table).")
@click.option("--strict", is_flag=True, help="A missing OOD set is an error instead of skipped.")
@click.option("--executor", default="local", show_default=True,
              type=click.Choice(["local", "ray", "slurm", "slurm-local"]),
              help="Where jobs run (slurm-local: submitit's local executor, for testing).")
@click.option("--workers", default=1, show_default=True, type=int,
              help="Parallel worker processes (local CPU) or Ray tasks at once.")
@click.option("--devices", default=None, help="Local GPUs, one worker each: 0,1,2 or all.")
@click.option("--ray-address", default=None, help="Join a Ray cluster (e.g. auto).")
@click.option("--slurm-partition", default=None, help="Slurm partition for the job array.")
@click.option("--slurm-time", default=240, show_default=True, type=int, help="Minutes per job.")
@click.option("--slurm-gpus-per-job", default=1, show_default=True, type=int, help="GPUs per Slurm job.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Slurm: wait for the jobs, or submit and return (re-run to collect).")
@click.option("--retry-failed", is_flag=True, help="Run jobs recorded as failed again.")
@click.option("--compile/--no-compile", "compile_model", default=False, show_default=True,
              help="torch.compile the networks (pays a compile per job; measure first: "
                   "benchmarks/train_throughput.py --compile).")
def run(methods, datasets, protocol, classes, seeds, preset, overrides, out, data_dir, device,
        download, ood, strict, executor, workers, devices, ray_address, slurm_partition,
        slurm_time, slurm_gpus_per_job, wait, retry_failed, compile_model) -> int:
    """Run methods x data sets x classes x seeds; write <out>/results.csv and a leaderboard."""
    from bench.config import RunSpec, resolve_preset
    from bench.executors import make_executor
    from bench.nn.train import select_device
    from bench.protocols import get_protocol
    from bench.registry import METHODS
    from bench.report.leaderboard import console_text, summarise, write_summary
    from bench.runner import run as run_spec

    get_protocol(protocol)
    chosen = _split(methods)
    if chosen is None:
        chosen = tuple(m for m in METHODS if protocol in METHODS.load_object(m).protocols)
    device_type = select_device(device).type if device != "auto" else select_device("auto").type
    resolved = resolve_preset(preset, device_type)
    notes = [f"preset auto -> {resolved} (device {device_type})"] if preset == "auto" else []
    spec = RunSpec(
        methods=chosen, datasets=_split(datasets) or ("digits",), protocol=protocol,
        classes=_ints(classes, "--classes"), seeds=_ints(seeds, "--seeds") or (0,),
        preset=resolved, overrides=tuple(overrides), out=out, data_dir=data_dir or "",
        device=device, download=download, ood=_split(ood), strict=strict,
        compile=compile_model,
    )
    if workers < 1:
        raise BenchError("--workers must be at least 1")
    ex = make_executor(executor, workers=workers, devices=devices, ray_address=ray_address,
                       slurm_partition=slurm_partition, slurm_time=slurm_time,
                       slurm_gpus_per_job=slurm_gpus_per_job, wait=wait)
    rows, records = run_spec(spec, ex, retry_failed=retry_failed, notes=notes)
    summary = summarise(rows)  # once, for the terminal and the files
    click.echo(console_text(summary))
    write_summary(summary, f"{out}/leaderboard")
    failed = [r for r in records if r.get("status") == "failed"]
    pending = [r for r in records if r.get("status") not in ("done", "failed")]
    click.echo(f"\nresults: {out}/results.csv   leaderboard: {out}/leaderboard/")
    if pending:
        click.echo(f"{len(pending)} jobs not finished yet", err=True)
    if failed:
        for r in failed:
            click.echo(f"failed: {r['job_id']}: {r.get('error', '')}", err=True)
        click.echo(f"{len(failed)} of {len(records)} jobs failed (--retry-failed runs them again)",
                   err=True)
        return 1
    return 0


@cli.command("list")
@click.argument("what", type=click.Choice(["methods", "datasets", "protocols", "presets"]))
def list_cmd(what: str) -> int:
    """List registered methods, data sets, protocols or presets."""
    from bench.registry import DATASETS, GENERATED, METHODS, OFFLINE, OOD_ONLY

    if what == "methods":
        for name in METHODS:
            cls = METHODS.load_object(name)
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            click.echo(f"{name:<10} {', '.join(cls.protocols):<30} {doc}")
    elif what == "datasets":
        for name in DATASETS:
            kind = ("embedded, offline" if name in OFFLINE else
                    "OOD test set, folder" if name in OOD_ONLY else
                    "folder" if name == "imagenet30" else "torchvision, downloadable")
            click.echo(f"{name:<16} {kind}")
        for name in GENERATED:
            click.echo(f"{name:<16} generated OOD set (from the in-distribution test split)")
    elif what == "protocols":
        from bench.protocols import DEFAULT_OOD, PROTOCOLS

        for p in PROTOCOLS.values():
            click.echo(f"{p.name:<12} {p.description}")
        click.echo("\ndefault OOD sets:")
        for d, sets in DEFAULT_OOD.items():
            click.echo(f"  {d:<14} {', '.join(sets)}")
    else:
        click.echo("quick   small backbone, few epochs: the default run in minutes on a CPU")
        click.echo("paper   the papers' settings (CIFAR ResNet-18/34, hundreds of epochs): a GPU")
        click.echo("auto    paper on CUDA, quick otherwise (the default)")
    return 0


def _runs(runs: tuple[str, ...]) -> list[str]:
    from pathlib import Path

    chosen = list(runs) or ["runs"]
    for r in chosen:
        if not (Path(r) / "jobs").is_dir():
            raise BenchError(f"--runs {r}: not a run directory (no {r}/jobs); run `bench run` first")
    return chosen


@cli.command()
@click.option("--runs", multiple=True, help="Run directories (repeatable; default runs).")
@click.option("--out", default="results/leaderboard", show_default=True)
@click.option("--metric", default="auroc", show_default=True,
              type=click.Choice(["auroc", "aupr_in", "aupr_out", "fpr95", "accuracy"]))
def leaderboard(runs, out, metric) -> int:
    """Write one CSV and Markdown table per (protocol, dataset) from run directories.

    Notes under the tables (and at the end of README.md) name the seeds left out for missing
    columns and, for AUROC, the entries below chance.
    """
    from bench.report.leaderboard import console_text, load_runs, summarise, write_summary

    rows = load_runs(_runs(runs))
    if rows.empty:
        raise BenchError("the run directories hold no finished jobs")
    summary = summarise(rows, metric)
    paths = write_summary(summary, out)
    click.echo(console_text(summary))
    click.echo(f"\nwrote {len(paths)} files under {out}/")
    return 0


@cli.command()
@click.option("--runs", multiple=True, help="Run directories (repeatable; default runs).")
@click.option("--reference", "references", multiple=True,
              help="Reference tables (results/reference/<name>.csv; default all).")
@click.option("--csv", "csv_out", default=None, help="Also write the comparison as a CSV.")
def compare(runs, references, csv_out) -> int:
    """Our numbers beside published ones, with differences and 95%-interval flags."""
    from bench.report.leaderboard import load_runs
    from bench.report.reference import compare as compare_tables
    from bench.report.reference import format_comparison, load_reference

    rows = load_runs(_runs(runs))
    table = compare_tables(rows, load_reference(list(references) or None))
    click.echo(format_comparison(table))
    if csv_out:
        from bench.store import atomic_write_csv

        atomic_write_csv(csv_out, table)
    return 0


@cli.command()
@click.option("--runs", multiple=True, help="Run directories (repeatable; default runs).")
@click.option("--out", default="results/figures", show_default=True)
@click.option("--job", "job_id", default=None,
              help="Job for ROC curves, histograms and t-SNE (default: an MCL job if any).")
@click.option("--tsne/--no-tsne", default=True, show_default=True)
def figures(runs, out, job_id, tsne) -> int:
    """Draw the figures of a paper from run directories (PNG and PDF)."""
    from pathlib import Path

    from bench.report import figures as fig
    from bench.report.leaderboard import load_runs
    from bench.store import RunStore

    chosen = _runs(runs)
    rows = load_runs(chosen)
    if rows.empty:
        raise BenchError("the run directories hold no finished jobs")
    out_dir = Path(out)
    records = [r for d in chosen for r in RunStore(d).records()]
    paths = fig.auroc_bars(rows, out_dir) + fig.ood_heatmaps(rows, out_dir)
    paths += fig.training_curves(records, out_dir) + fig.cd_diagram(rows, out_dir)
    job_id = job_id or fig.pick_job(records)
    if job_id:
        home = next((d for d in chosen if RunStore(d).record(job_id)), None)
        if home is None:
            raise BenchError(f"--job {job_id}: no such job in {', '.join(chosen)}")
        paths += fig.roc_and_histograms(RunStore(home).job_dir(job_id), out_dir)
        if tsne:
            paths += fig.tsne(Path(home), job_id, out_dir)
    for p in paths:
        click.echo(str(p))
    return 0


@cli.group()
def data() -> None:
    """Data sets: where their files go."""


@data.command("info")
@click.argument("name", required=False)
@click.option("--data-dir", default=None)
def data_info(name, data_dir) -> int:
    """Where each data set lives and whether it is present."""
    from pathlib import Path

    from bench.datasets import default_data_dir, load_dataset
    from bench.errors import DataMissingError
    from bench.registry import DATASETS

    directory = Path(data_dir) if data_dir else default_data_dir()
    click.echo(f"data dir: {directory}  (--data-dir, or $BENCH_DATA)")
    for n in [name] if name else DATASETS.names():
        DATASETS.check(n)
        try:
            load_dataset(n, "test", directory, download=False)
            state = "present"
        except DataMissingError as exc:
            state = "missing: " + str(exc).split(": ", 1)[1]
        except BenchError as exc:
            state = str(exc)
        click.echo(f"{n:<16} {state}")
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point: BenchError -> one line on stderr and exit 2; failed jobs -> exit 1."""
    warnings.filterwarnings("ignore", category=UserWarning, module="pyod")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"bench: warning: {msg}\n"
    try:
        code = cli.main(args=argv, prog_name="bench", standalone_mode=False)
    except BenchError as exc:
        for line in str(exc).splitlines() or [""]:
            click.echo(f"bench: error: {line}", err=True)
        sys.exit(2)
    except click.exceptions.UsageError as exc:
        click.echo(f"bench: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("bench: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("bench: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
