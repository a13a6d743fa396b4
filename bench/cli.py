"""The ``bench`` command: run, list, leaderboard, figures, compare, data."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from bench.console import echo, printable
from bench.errors import BenchError
from bench.metrics import METRICS


class LazyChoice(click.ParamType):
    """One of the names a module declares (``"module:NAME"``), checked when used: the modules
    that declare figures and leaderboard formats are slow to import, so `bench --help` does
    not import them."""

    def __init__(self, declared: str, kind: str) -> None:
        self.declared, self.kind, self.name = declared, kind, kind

    def choices(self) -> tuple[str, ...]:
        import importlib

        module, attribute = self.declared.split(":")
        return tuple(getattr(importlib.import_module(module), attribute))

    def get_metavar(self, param, ctx=None) -> str:
        return "[" + "|".join(self.choices()) + "]"

    def convert(self, value, param, ctx):
        from bench.errors import unknown_name

        choices = self.choices()
        if value not in choices:
            self.fail(str(unknown_name(self.kind, value, choices)), param, ctx)
        return value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mcl-bench")
def cli() -> None:
    """Benchmark self-supervised anomaly and OOD detectors: MCL, CSI, SimCLR, Rot, PyOD,
    and the ImageNet-pretrained baselines (DN2, PANDA, MSC).

    \b
    bench run                                  embedded default: one-class digits, quick preset
    bench run --methods mcl,csi --datasets cifar10 --preset paper
    bench run --protocol ood --datasets fashion-mnist --methods mcl,csi
    bench run --methods knn,ocsvm --features pixel,mcl
    bench run --methods panda,msc --datasets cifar10 --preset paper   (downloads weights)
    bench list methods | fields mcl
    bench leaderboard --runs runs
    bench figures --runs runs
    bench compare --runs runs
    bench report --rows results/rows           one HTML page of everything
    bench run experiments/digits-quick.toml    an experiment file's runs
    bench reproduce experiments/ [--dry-run]   every experiment, then results/ from the rows
    """


@cli.command()
@click.option("--methods", help="Comma-separated methods (default: every method of the protocol "
              "but the ImageNet-pretrained ones, which download weights). See `bench list methods`.")
@click.option("--datasets", default="digits", show_default=True,
              help="Comma-separated normal / in-distribution data sets.")
@click.option("--protocol", default="one-class", show_default=True,
              help="one-class, ood or ood-labeled; ood-val and ood-labeled-val are their tuning "
                   "splits (held-out training images vs validation OOD sets).")
@click.option("--classes", help="One-class: normal classes to run, e.g. 0,3 or 0-4 (default all).")
@click.option("--seeds", default="0", show_default=True, help="Seeds, e.g. 0,1,2 or 0-4.")
@click.option("--preset", default="auto", show_default=True,
              help="quick (CPU minutes), standard (full data, CPU hours), paper (the papers' "
                   "settings) or auto (paper on CUDA, else quick).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field: mcl.alpha=0.1, or epochs=5 for every method; "
                   "mcl.alpha=0.01,0.05,0.2 sweeps it (one config per value). "
                   "`bench list fields METHOD` lists the fields.")
@click.option("--features", default="pixel", show_default=True,
              help="Classical methods: what they see, comma-separated: pixel, or the trained "
                   "network of another method (its penultimate features; `bench list methods` "
                   "names the methods with a network).")
@click.option("--checkpoint", "checkpoints", multiple=True, metavar="[METHOD=]PATH",
              help="Score this trained network instead of training one: a model.pt of bench, "
                   "the official MCL or CSI code's checkpoint, or an OpenOOD v1.5 classifier "
                   "(for ce); not for panda or msc (their weights: --set panda.weights=PATH). "
                   "METHOD= when several methods with a network are selected; repeatable.")
@click.option("--network", "networks", multiple=True, metavar="MODULE:FUNCTION",
              help="Score a trained network of yours with every post-hoc score its outputs "
                   "allow: a function returning a torch.nn.Module (docs/extending.md gives the "
                   "contract); repeatable. Alone, it is the only method.")
@click.option("--out", default="runs", show_default=True, help="Run directory.")
@click.option("--data-dir", default=None,
              help="Data folder (default $BENCH_DATA, else ~/.cache/mcl-bench/data).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(["auto", "fp32", "bf16"]),
              help="auto: bf16 autocast + channels_last on CUDA and on CPUs with native bf16 "
                   "(AVX512-BF16, AMX), else fp32. Recorded in every row.")
@click.option("--download/--no-download", default=True, show_default=True,
              help="Allow downloading missing torchvision data sets (checksummed).")
@click.option("--ood", help="OOD protocols: comma-separated OOD sets (default: the protocol table).")
@click.option("--ood-table", default="bench", show_default=True,
              help="Which OOD table: bench (this suite's near / far sets), or openood-v1.5 "
                   "(OpenOOD v1.5's CIFAR benchmark, read from its image lists; `bench list "
                   "protocols`).")
@click.option("--strict", is_flag=True, help="A missing OOD set is an error instead of skipped.")
@click.option("--executor", default="local", show_default=True,
              type=click.Choice(["local", "ray", "slurm", "slurm-local"]),
              help="Where jobs run (slurm-local: submitit's local executor, for testing).")
@click.option("--workers", default=1, show_default=True, type=int,
              help="Parallel worker processes (local CPU or GPUs) or Ray tasks at once. Local "
                   "workers print progress as lines, each led by its job id.")
@click.option("--devices", default=None, help="Local GPUs, one worker each: 0,1,2 or all.")
@click.option("--jobs-per-device", default=1, show_default=True, type=int,
              help="Jobs at once on each device (--devices, every visible GPU, or the CPU), "
                   "Ray's fractional GPUs, or per Slurm task; pays for small jobs that leave a "
                   "GPU idle (docs/performance.md).")
@click.option("--ray-address", default=None, help="Join a Ray cluster (e.g. auto).")
@click.option("--slurm-partition", default=None, help="Slurm partition for the job array.")
@click.option("--slurm-time", default=240, show_default=True, type=int, help="Minutes per job.")
@click.option("--slurm-gpus-per-job", default=1, show_default=True, type=int, help="GPUs per Slurm job.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Slurm: wait for the jobs, or submit and return (re-run to collect).")
@click.option("--retry-failed", is_flag=True, help="Run jobs recorded as failed again.")
@click.option("--compile", "compile_model", is_flag=False, flag_value="default", default="",
              metavar="[MODE]",
              help="torch.compile every job's network, afresh per job (pays a compile per job; "
                   "measure first: benchmarks/train_throughput.py --compile). MODE: default, "
                   "reduce-overhead (CUDA graphs of the step on CUDA), max-autotune, "
                   "max-autotune-no-cudagraphs.")
@click.option("--deterministic", is_flag=True,
              help="Deterministic kernels (cuDNN, cuBLAS): a resumed CUDA run ends with the same "
                   "weights as an uninterrupted one; slower.")
@click.option("--log", "trackers", multiple=True, metavar="TRACKER",
              help="Log each finished job (config, per-epoch loss and throughput, final metrics, "
                   "files) to tensorboard (<out>/tensorboard) or mlflow (<out>/mlflow.db, or "
                   "--log-uri); repeatable. Optional extras: pip install 'mcl-bench[tensorboard]' "
                   "/ '[mlflow]'.")
@click.option("--log-uri", default="", help="MLflow's tracking URI (default: sqlite:///<out>/mlflow.db).")
@click.argument("experiment", required=False, metavar="[EXPERIMENT.toml]")
def run(methods, datasets, protocol, classes, seeds, preset, overrides, features, checkpoints,
        networks, out, data_dir,
        device, precision, download, ood, ood_table, strict, executor, workers, devices,
        jobs_per_device, ray_address,
        slurm_partition, slurm_time, slurm_gpus_per_job, wait, retry_failed, compile_model,
        deterministic, trackers, log_uri, experiment) -> int:
    """Run methods x data sets x classes x seeds; write <out>/results.csv and a leaderboard.

    Methods are names (`bench list methods`), installed plugins, or import paths of your own
    detector classes (my_pkg.detectors:MyDetector, path/to/file.py:MyDetector). With an
    experiment file (experiments/*.toml), its runs: only the executor options may be given."""
    from bench.api import execute

    if experiment:
        return _run_experiment(experiment, executor=executor, workers=workers, devices=devices,
                               jobs_per_device=jobs_per_device, ray_address=ray_address,
                               slurm_partition=slurm_partition, slurm_time=slurm_time,
                               slurm_gpus_per_job=slurm_gpus_per_job, wait=wait,
                               retry_failed=retry_failed)
    if networks:
        methods = ",".join([*([methods] if methods else []), *networks])
    rows, records, problems = execute(
        methods=methods, datasets=datasets, protocol=protocol, classes=classes, seeds=seeds,
        preset=preset, set=overrides, features=features, checkpoints=checkpoints, out=out,
        data_dir=data_dir, device=device, precision=precision, download=download, ood=ood,
        ood_table=ood_table, strict=strict, compile=compile_model, deterministic=deterministic,
        log=trackers, log_uri=log_uri,
        executor=executor, workers=workers, devices=devices, ray_address=ray_address,
        slurm_partition=slurm_partition, slurm_time=slurm_time,
        slurm_gpus_per_job=slurm_gpus_per_job, wait=wait, retry_failed=retry_failed,
        jobs_per_device=jobs_per_device)
    return _report_run(out, rows, records, problems)


# the options an experiment file leaves to the command line (how its runs are executed)
EXECUTION_OPTIONS = ("executor", "workers", "devices", "jobs_per_device", "ray_address",
                     "slurm_partition", "slurm_time", "slurm_gpus_per_job", "wait",
                     "retry_failed")  # an experiment file may also declare log / log_uri


def _run_experiment(path: str, **executor) -> int:
    """`bench run FILE.toml`: the file's runs, the command line's executor options."""
    from click.core import ParameterSource

    from bench import experiments

    ctx = click.get_current_context()
    given = [p.opts[0] for p in ctx.command.params
             if p.name not in (*EXECUTION_OPTIONS, "experiment")
             and ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]
    if given:
        raise BenchError(f"bench run {path}: the runs come from the file; {', '.join(given)} "
                         "cannot be given with it (executor options can)")
    exp = experiments.load(path)
    defaults = {k: v for k, v in executor.items()
                if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    rows, records, problems = experiments.execute(exp, **defaults)
    return _report_run(exp.out, rows, records, problems)


def _report_run(out: str, rows, records: list[dict], problems: list[str]) -> int:
    """The leaderboard on the terminal and in <out>/leaderboard; failed jobs; the exit code."""
    from bench.console import warn
    from bench.files import inside
    from bench.reporting.leaderboard import console_text, publish_summary, summarise

    for problem in problems:
        warn(problem)
    summary = summarise(rows)  # once, for the terminal and the files
    echo(console_text(summary))
    # the run's own table, from its own rows
    publish_summary(summary, inside(out, "leaderboard"), [out], force=True)
    failed = [r for r in records if r.get("status") == "failed"]
    pending = [r for r in records if r.get("status") not in ("done", "failed")]
    echo(f"\nresults: {out}/results.csv   leaderboard: {out}/leaderboard/")
    if pending:
        echo(f"{len(pending)} jobs not finished yet", err=True)
    if failed:
        for r in failed:
            echo(f"failed: {r['job_id']}: {printable(r.get('error', ''), one_line=True)}",
                 err=True)
        echo(f"{len(failed)} of {len(records)} jobs failed (--retry-failed runs them again)",
                   err=True)
        return 1
    return 0


@cli.command("list")
@click.argument("what", type=click.Choice(["methods", "datasets", "protocols", "presets",
                                           "fields"]))
@click.argument("method", required=False)
def list_cmd(what: str, method: str | None) -> int:
    """List methods, data sets, protocols, presets, or the config fields of METHOD."""
    from bench.listing import show

    show(what, method)
    return 0


def _default_out(out: str | None, runs: tuple[str, ...], rows_files: tuple[str, ...],
                 kind: str) -> str:
    """--out, else beside the first run (<run>/<kind>), else beside the first rows folder
    (results/rows -> results/<kind>): never a committed folder by surprise."""
    if out:
        return out
    if runs or not rows_files:
        return str(Path(runs[0] if runs else "runs") / kind)
    first = Path(rows_files[0])
    return str((first if first.is_dir() else first.parent).parent / kind)


def _runs(runs: tuple[str, ...], rows_files: tuple[str, ...] = ()) -> list[str]:
    from pathlib import Path

    chosen = list(runs) or ([] if rows_files else ["runs"])
    for r in chosen:
        if not (Path(r) / "jobs").is_dir():
            raise BenchError(f"--runs {r}: not a run directory (no {r}/jobs); run `bench run` first")
    return chosen


def _sources(runs: tuple[str, ...], rows_files: tuple[str, ...]) -> list[str]:
    """What a command reads its rows from: the run directories, checked, then the rows files."""
    return [*_runs(runs, rows_files), *rows_files]


@cli.command()
@click.option("--runs", multiple=True, help="Run directories (repeatable; default runs).")
@click.option("--rows", "rows_files", multiple=True,
              help="Tidy rows files or folders of them (results.csv schema; repeatable), e.g. "
                   "results/rows.")
@click.option("--out", default=None,
              help="Output folder (default: beside the first run, <run>/leaderboard; with "
                   "--rows only, a leaderboard folder beside the rows folder).")
@click.option("--metric", default="auroc", show_default=True,
              type=click.Choice(METRICS))
@click.option("--force", is_flag=True,
              help="Replace files made from other rows (another run's, a committed result), "
                   "and README.md's sections of tables these rows do not make.")
@click.option("--class-names", is_flag=True,
              help="Name one-class columns by the data set's classes (T-shirt/top, ...), as "
                   "papers print them, where the data set names them.")
@click.option("--format", "formats", multiple=True,
              type=LazyChoice("bench.reporting.leaderboard:LEADERBOARD_FORMATS",
                              "leaderboard format"),
              help="Files to write per table (repeatable; default csv and markdown): csv "
                   "(numbers, notes in columns), markdown (and README.md), latex (booktabs: "
                   "mean ± std, best bold, second underlined, a caption).")
def leaderboard(runs, rows_files, out, metric, force, class_names, formats) -> int:
    """Write one table per (protocol, dataset, preset) from runs or rows: CSV and Markdown, or
    LaTeX (--format latex).

    Notes under the Markdown tables (and at the end of README.md), columns of the CSV, name the
    seeds left out for missing columns, the entries that ran on fewer columns than the others
    and, for AUROC, the entries below chance. FPR95 tables sort the lowest (best) first.
    """
    from bench.api import read_rows
    from bench.reporting.leaderboard import (
        console_text,
        publish_summary,
        summarise,
        with_class_names,
    )

    sources = _sources(runs, rows_files)
    summary = summarise(read_rows(*sources), metric)
    if class_names:
        summary = with_class_names(summary)
    out = _default_out(out, runs, rows_files, "leaderboard")
    paths = publish_summary(summary, out, sources,
                            formats=tuple(formats) or ("csv", "markdown"), force=force,
                            keep_other_sections=not force)
    echo(console_text(summary))
    echo(f"\nwrote {len(paths)} files under {out}/")
    return 0


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="EXPERIMENTS...")
@click.option("--dry-run", is_flag=True,
              help="Plan only: each rows file an experiment declares, its planned jobs against "
                   "the committed file's (exit 1 on a difference).")
@click.option("--results", default="results", show_default=True,
              help="The results folder regenerated from the rows.")
@click.option("--executor", default=None, type=click.Choice(["local", "ray", "slurm"]),
              help="Overrides the files' executor hints.")
@click.option("--workers", default=None, type=int, help="Overrides the files' hints.")
@click.option("--jobs-per-device", default=None, type=int, help="Overrides the files' hints.")
def reproduce(paths, dry_run, results, executor, workers, jobs_per_device) -> int:
    """Run every experiment file (a folder: its *.toml files), then regenerate the results
    folder from their rows: rows files, leaderboards, figures, the comparison with published
    numbers and the report, as results/README.md lists."""
    from bench import experiments

    if dry_run:
        return _dry_run([experiments.load(p) for p in experiments.files(list(paths))])
    from bench import api

    api.reproduce(list(paths), results, executor=executor, workers=workers,
                  jobs_per_device=jobs_per_device)
    return 0


def _dry_run(exps) -> int:
    """Each experiment's declared rows files: planned jobs against the committed ones."""
    from bench import experiments

    differ, planned = False, []
    for exp in exps:
        try:
            runs = experiments.plan(exp)
        except BenchError as exc:
            echo(f"{exp.path}: does not plan: {exc}")
            differ = True
            continue
        planned.append((exp, runs))
        echo(f"{exp.path}: {len(exp.runs)} runs, {sum(len(j) for _, j in runs)} jobs into "
             f"{exp.out}")
    for d in experiments.differences(planned):
        state = ("the same jobs" if not d["missing"] and not d["extra"] else
                 f"{len(d['missing'])} planned jobs not in it, {len(d['extra'])} of its jobs "
                 "not planned" + ("" if d["exists"] else " (no such file)"))
        echo(f"{d['file']}: {d['planned']} planned, {d['committed']} committed: {state}")
        for job_id in d["missing"][:3]:
            echo(f"    not committed: {job_id}")
        for job_id in d["extra"][:3]:
            echo(f"    not planned:   {job_id}")
        differ = differ or bool(d["missing"] or d["extra"])
    return 1 if differ else 0


@cli.command("rows")
@click.option("--runs", multiple=True, help="Run directories (repeatable; default runs).")
@click.option("--rows", "rows_files", multiple=True, help="Tidy rows files to merge in.")
@click.option("--out", default=None,
              help="Output folder (default: beside the first run, <run>/rows).")
@click.option("--force", is_flag=True, help="Replace rows files made from other rows.")
def rows_cmd(runs, rows_files, out, force) -> int:
    """Write the tidy rows of run directories as <out>/<protocol>_<dataset>.csv (the results.csv
    schema, sorted: the same rows give the same bytes), to commit beside the leaderboards."""
    from bench import api

    out = _default_out(out, runs, rows_files, "rows")
    for path in api.write_rows(_sources(runs, rows_files), out, force):
        echo(str(path))
    return 0


@cli.command()
@click.option("--runs", multiple=True, help="Run directories (repeatable; default runs).")
@click.option("--rows", "rows_files", multiple=True, help="Tidy rows files (repeatable).")
@click.option("--reference", "references", multiple=True,
              help="Reference tables by name (default all; `bench compare --list` names them).")
@click.option("--list", "list_references", is_flag=True,
              help="List the reference tables (name, protocol, data set, papers) and exit.")
@click.option("--reference-dir", default=None,
              help="Folder of reference CSVs (default: the tables shipped with the package).")
@click.option("--csv", "csv_out", default=None, help="Also write the comparison as a CSV.")
@click.option("--ours", "ours", multiple=True,
              help="Compare these entries of ours (method/score, e.g. mcl/sei; repeatable; all = "
                   "every entry) with every published method of the same protocol and data set, "
                   "instead of the entry each published table names.")
@click.option("--side-by-side", is_flag=True,
              help="One markdown table per data set: published methods and ours, cell by cell.")
@click.option("--format", "output_format", type=click.Choice(["text", "latex"]), default="text",
              show_default=True,
              help="latex: the side-by-side tables as booktabs LaTeX (best bold, second "
                   "underlined, a caption).")
def compare(runs, rows_files, references, list_references, reference_dir, csv_out, ours,
            side_by_side, output_format) -> int:
    """Our numbers beside published ones, like with like (the same classes), with differences
    and 95%-interval flags."""
    from bench.reporting.reference import compare as compare_tables
    from bench.reporting.reference import (
        format_comparison,
        format_side_by_side,
        load_reference,
        side_by_side_latex,
    )

    if list_references:
        from pathlib import Path

        from bench.reporting.reference import (
            packaged_reference_dir,
            read_reference,
            reference_names,
        )

        folder = Path(reference_dir) if reference_dir else packaged_reference_dir()
        for name in reference_names(folder):
            part = read_reference(folder / f"{name}.csv")
            papers = ", ".join(sorted(set(part["paper"].astype(str))))
            echo(f"{name:<40} {part['protocol'].iloc[0]:<12} {part['dataset'].iloc[0]:<14} "
                 f"{papers}")
        return 0
    from bench.api import read_rows

    table = compare_tables(read_rows(*_sources(runs, rows_files)),
                           load_reference(list(references) or None, reference_dir),
                           ours=list(ours) or None)
    if output_format == "latex":
        echo(side_by_side_latex(table), nl=False)
    else:
        echo(format_side_by_side(table) if side_by_side else format_comparison(table))
    if csv_out:
        from bench.files import atomic_write_csv
        from bench.reporting.leaderboard import neutralised

        atomic_write_csv(csv_out, neutralised(table))
    return 0


@cli.command()
@click.option("--runs", multiple=True, help="Run directories (repeatable; default runs).")
@click.option("--rows", "rows_files", multiple=True,
              help="Tidy rows files (repeatable): the tables and bar figures.")
@click.option("--out", default=None,
              help="Output folder (default: beside the first run, <run>/figures).")
@click.option("--force", is_flag=True, help="Replace figures made from other rows.")
@click.option("--job", "job_ids", multiple=True,
              help="Job for ROC curves, histograms and t-SNE (repeatable; default: an MCL job "
                   "with MCL's own settings, not a --set variant).")
@click.option("--tsne/--no-tsne", default=True, show_default=True)
@click.option("--size", type=click.Choice(["column", "page"]), default="page", show_default=True,
              help="Figure width: one column (3.3 in) or a page (6.9 in).")
@click.option("--figure", "only", multiple=True,
              type=LazyChoice("bench.reporting.figures:FIGURE_NAMES", "figure"),
              help="Draw only these figures (repeatable; default all): per-class AUROC dots (with "
                   "published per-class values in grey where they exist), OOD "
                   "heat maps, training losses, the critical-difference diagram, ablations, the "
                   "ROC / histogram / t-SNE of --job.")
@click.option("--control", default=None, metavar="ENTRY",
              help="The critical-difference diagram's control entry for Holm's comparisons "
                   "(default: MCL's, mcl/sei).")
def figures(runs, rows_files, out, force, job_ids, tsne, size, only, control) -> int:
    """Draw the figures of a paper from run directories and rows files (PNG and PDF). Reads only
    what jobs wrote; never trains a model or loads a data set."""
    from bench import api

    chosen = _runs(runs, rows_files)
    out = _default_out(out, runs, rows_files, "figures")
    for path in api.figures([*chosen, *rows_files], out, runs=chosen, jobs=job_ids, tsne=tsne,
                            size=size, only=only or None, control=control, force=force):
        echo(str(path))
    return 0


@cli.command()
@click.option("--runs", multiple=True, help="Run directories (repeatable; default runs): their "
                                            "machines, training curves and job figures.")
@click.option("--rows", "rows_files", multiple=True,
              help="Tidy rows files or folders of them (repeatable), e.g. results/rows.")
@click.option("--out", default=None,
              help="Output folder (default: beside the first run, <run>/report).")
@click.option("--force", is_flag=True, help="Replace a page made from other rows.")
@click.option("--control", default=None, metavar="ENTRY",
              help="The significance tests' control entry (default: MCL's, mcl/sei).")
def report(runs, rows_files, out, force, control) -> int:
    """Write <out>/index.html: one self-contained page (no network) with every leaderboard
    (sortable), the comparison with published numbers, the significance tests, every figure
    and what each run ran on."""
    from bench import api

    chosen = _runs(runs, rows_files)
    out = _default_out(out, runs, rows_files, "report")
    echo(str(api.report([*chosen, *rows_files], out, runs=chosen, control=control,
                        force=force)))
    return 0


@cli.group()
def data() -> None:
    """Data sets: where their files go."""


@data.command("info")
@click.argument("name", required=False)
@click.option("--data-dir", default=None)
def data_info(name, data_dir) -> int:
    """Where each data set lives and whether its files are there (checked, not decoded)."""
    from pathlib import Path

    from bench.datasets import default_data_dir, probe_dataset
    from bench.errors import DataMissingError
    from bench.registry import DATASETS

    directory = Path(data_dir) if data_dir else default_data_dir()
    echo(f"data dir: {directory}  (--data-dir, or $BENCH_DATA)")
    for n in [name] if name else DATASETS.names():
        entry = DATASETS.entry(n)
        if entry.kind == "generated":
            state = "generated when used"
        else:
            try:
                probe_dataset(n, "test", directory, download=False)
                state = "present"
            except DataMissingError as exc:
                state = (f"missing: {exc.missing}; `bench data download {n}` fetches it "
                         "(checksummed)" if exc.downloadable else
                         f"missing: {exc.missing}; {exc.fix}" if exc.missing else
                         "missing: " + str(exc).split(": ", 1)[-1])
            except BenchError as exc:
                state = "damaged: " + str(exc)
        echo(f"{n:<16} {state}")
    return 0


@data.command("download")
@click.argument("names", nargs=-1, required=True)
@click.option("--data-dir", default=None)
def data_download(names, data_dir) -> int:
    """Download data sets into the data dir, checksummed (the same code `bench run` uses)."""
    from pathlib import Path

    from bench.datasets import default_data_dir, probe_dataset
    from bench.registry import DATASETS

    directory = Path(data_dir) if data_dir else default_data_dir()
    for name in names:
        entry = DATASETS.entry(name)
        if entry.kind not in ("download",):
            raise BenchError(f"{name}: {KIND_OF_SETS.get(entry.kind, entry.kind)}; nothing to "
                             f"download (`bench data info {name}` says where its files go)")
        for split in ("train", "test"):
            probe_dataset(name, split, directory, download=True)
        echo(f"{name:<16} present under {directory}")
    return 0


KIND_OF_SETS = {"embedded": "embedded in the package", "generated": "generated when used",
                "folder": "an image folder from its authors' archive",
                "ood-folder": "an image folder from its authors' archive",
                "plugin": "a plugin's data set"}


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def clamp_thread_variables() -> list[str]:
    """Thread counts above this machine's cores (OMP_NUM_THREADS=99999 was OOM-killed at 21 GB)
    lowered to the cores, before torch reads them; a note for each."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    notes = []
    for name in THREAD_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > (cores or 1):
            os.environ[name] = str(cores or 1)
            notes.append(f"{name}={value} is more than this machine's {cores} cores; using {cores}")
    return notes


def _terminate(signum, frame) -> None:
    """SIGTERM ends bench like Ctrl-C: workers are stopped, nothing is left half-written."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point: BenchError and the operating system's errors -> one line on stderr and exit
    2; failed jobs -> exit 1; Ctrl-C or SIGTERM -> exit 130."""
    import signal

    from bench.errors import os_error_message

    warnings.filterwarnings("ignore", category=UserWarning, module="pyod")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"bench: warning: {msg}\n"
    for note in clamp_thread_variables():
        echo(f"bench: warning: {note}", err=True)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = cli.main(args=argv, prog_name="bench", standalone_mode=False)
    except BenchError as exc:
        for line in str(exc).splitlines() or [""]:
            echo(f"bench: error: {line}", err=True)
        sys.exit(2)
    except OSError as exc:
        echo(f"bench: error: {os_error_message(exc)}", err=True)
        sys.exit(2)
    except MemoryError:
        echo("bench: error: out of memory", err=True)
        sys.exit(2)
    except click.exceptions.UsageError as exc:
        echo(f"bench: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        echo("bench: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
