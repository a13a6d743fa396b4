"""RunSpec -> validate -> configs -> probe -> jobs -> executor -> results store.

`plan` checks everything (names, presets, --set, data) before anything is written, in four steps:
`validate` the names, `build_configs` (presets, --set, sweeps), `probe` the data (the
in-distribution sets are loaded, the OOD sets only checked on disk) and `expand` into Jobs.
`run` skips finished jobs, redoes damaged ones, runs the rest through an executor and rebuilds
results.csv.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bench.config import (
    RunSpec,
    Variant,
    build_method_configs,
    check_overrides,
    load_preset,
    parse_overrides,
    stable_hash,
)
from bench.console import log, warn
from bench.datasets import default_data_dir, load_dataset
from bench.errors import BenchError, DataMissingError, unknown_name
from bench.files import atomic_write_json, check_writable, clean_stale_temporaries, inside
from bench.jobs import PIXEL, Job, make_job
from bench.nn.precision import CHOICES as PRECISIONS
from bench.protocols import (
    Protocol,
    available_ood_sets,
    benchmark,
    check_in_distribution,
    get_protocol,
    get_table,
    ood_sets_for,
    tasks,
)
from bench.registry import METHODS, method_class
from bench.store import RunStore


@dataclass
class Plan:
    """The jobs of a run, the OOD sets left out ({dataset: {set: reason}}), and warnings."""

    jobs: list[Job]
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


RUN_FOLDERS = ("jobs", "models", "leaderboard", "skipped", "slurm")  # bench writes these
MAX_JOBS = 100_000  # jobs one plan may hold; more is a mistake (--seeds 0-2000000)


def _method_class(name: str):
    return method_class(name)


def is_classical(name: str) -> bool:
    return METHODS.kind(name) == "classical"


def network_methods() -> list[str]:
    """The methods with a network of their own: the feature sources of `--features`."""
    return [m for m in METHODS.names() if METHODS.kind(m) in NETWORK_KINDS]


NETWORK_KINDS = ("self-supervised", "labeled", "pretrained", "network")


def _has_network(name: str) -> bool:
    return name in METHODS and METHODS.kind(name) in NETWORK_KINDS


def _check_methods(spec: RunSpec, protocol: Protocol) -> None:
    """Every method exists and runs in the protocol (`Detector.skip`); a classical method on a
    network's features runs where that network does (`_check_features`)."""
    if not spec.methods:
        raise BenchError("no methods selected")
    for m in spec.methods:
        METHODS.check(m)
        reason = _method_class(m).skip(protocol)
        if reason and not (is_classical(m) and encoders(spec)):
            raise BenchError(f"method {m} does not run in protocol {protocol.name}: {reason}")


def _check_features(spec: RunSpec, protocol: Protocol) -> list[str]:
    """Feature sources: pixel, or a network method that runs in the protocol; warnings."""
    classical = [m for m in spec.methods if is_classical(m)]
    for source in spec.features:
        if source == PIXEL:
            reason = next((r for m in classical if (r := _method_class(m).skip(protocol))), None)
            if reason and encoders(spec):
                raise BenchError(f"--features pixel: in protocol {protocol.name}, {reason}; "
                                 "give only the encoders")
            continue
        from bench.methods.pretrained import is_pretrained_name

        if is_pretrained_name(source):
            _method_class(source).Config()  # the model exists (did-you-mean otherwise)
            continue
        METHODS.check(source)
        if not _has_network(source):
            raise BenchError(f"--features {source}: features come from a method with a network "
                             f"({', '.join(network_methods())}) or a pretrained one "
                             "(<torchvision model>-in1k, e.g. resnet18-in1k)")
        reason = _method_class(source).skip(protocol)
        if reason:
            raise BenchError(f"--features {source}: {source} does not run in protocol "
                             f"{protocol.name}: {reason}")
    if spec.features != (PIXEL,) and not classical:
        return [f"--features {','.join(spec.features)} applies to classical methods only, and "
                "none is selected"]
    return []


def validate(spec: RunSpec) -> tuple[Protocol, list[str]]:
    """Names, protocol support, feature sources, precision: BenchError on the first bad one;
    returns the protocol and warnings about options that do not apply."""
    protocol = get_protocol(spec.protocol)
    _check_methods(spec, protocol)
    if not spec.datasets:
        raise BenchError("no data sets selected")
    for d in spec.datasets:
        check_in_distribution(d)
    if not spec.seeds:
        raise BenchError("no seeds given")
    if spec.precision not in PRECISIONS:
        raise unknown_name("precision", spec.precision, PRECISIONS)
    warnings = _check_features(spec, protocol)
    if spec.classes is not None and not protocol.per_class:
        warnings.append(f"--classes does not apply to protocol {spec.protocol} (ignored)")
    if spec.ood is not None and protocol.per_class:
        warnings.append("--ood does not apply to protocol one-class (ignored)")
    table = benchmark(spec.ood_table)
    if table.named and protocol.per_class:
        raise BenchError(f"--ood-table {spec.ood_table}: protocol one-class has no OOD sets")
    if table.loader:  # its own images: an entry for each data set
        for d in spec.datasets:
            get_table(spec.ood_table, d)
    return protocol, warnings


def encoders(spec: RunSpec) -> list[str]:
    return [f for f in spec.features if f != PIXEL]


def build_configs(spec: RunSpec) -> dict[str, list[Variant]]:
    """Each method's configs (one per point of a --set sweep), and each feature encoder's."""
    names = list(dict.fromkeys([*spec.methods, *encoders(spec)]))
    classes = {m: _method_class(m).Config for m in names}
    overrides = parse_overrides(spec.overrides)
    check_overrides(overrides, names, classes)
    _check_tuned_fields(spec, overrides, names)
    preset = load_preset(spec.preset)
    configs = {m: build_method_configs(m, classes[m], preset, overrides) for m in names}
    for source in encoders(spec):
        if len(configs[source]) != 1:
            raise BenchError(f"--features {source}: sweep the encoder in its own run (a --set "
                             "list for it makes several encoders)")
    return configs


def _check_tuned_fields(spec: RunSpec, overrides, methods: list[str]) -> None:
    """A table that chooses scores' settings on its validation lists refuses a --set of one
    of them: the row would be labeled with a value the search replaced."""
    from bench.nn.posthoc import POSTHOC

    table = benchmark(spec.ood_table)
    if not (get_protocol(spec.protocol).uses_ood_sets
            and any(table.tunes(d) for d in spec.datasets)):
        return
    swept = {f for entry in POSTHOC.values() for f, _ in entry.sweep}
    for method in methods:
        sweeps = getattr(_method_class(method), "score_sweeps", {})
        swept |= {f for sweep in sweeps.values() for f, _ in sweep}
    for ov in overrides:
        if ov.field in swept:
            raise BenchError(f"--set {ov.text}: under --ood-table {spec.ood_table} {ov.field} is "
                             "chosen on the table's validation lists (OpenOOD's search), as "
                             "each row's setting column records; fix it on another table")


def probe(spec: RunSpec, protocol: Protocol, data_dir: str
          ) -> tuple[dict[str, tuple[int, tuple[str, ...]]], dict[str, dict[str, str]]]:
    """{dataset: (number of classes, OOD sets available)} and the OOD sets left out. The
    in-distribution sets are loaded (checksums, class count); OOD sets are only checked on
    disk (and downloaded if allowed), not decoded."""
    missing_messages, info, skipped = [], {}, {}
    for d in spec.datasets:
        ood = (ood_sets_for(d, spec.ood, spec.protocol, spec.ood_table)
               if protocol.uses_ood_sets else ())
        try:
            train = load_dataset(d, "train", data_dir, spec.download)
            load_dataset(d, "test", data_dir, spec.download)
            if ood:  # a table with its own images has its own in-distribution test split
                benchmark(spec.ood_table).check_files(data_dir, d, d)
                benchmark(spec.ood_table).check_tuning_files(data_dir, d)
        except DataMissingError as exc:
            missing_messages.append(str(exc))
            continue
        if ood:
            ood, skipped[d] = available_ood_sets(ood, data_dir, spec.download, spec.strict, d,
                                                 spec.ood_table)
            if not ood:
                raise BenchError(f"{d}: none of its OOD sets is available; "
                                 + "; ".join(skipped[d].values()))
        info[d] = (len(train.classes), ood)
    if missing_messages:
        raise BenchError("\n".join(dict.fromkeys(missing_messages)))
    return info, skipped


def _sources(spec: RunSpec, method: str) -> tuple[str, ...]:
    return spec.features if is_classical(method) else (PIXEL,)


def count_jobs(spec: RunSpec, configs: dict[str, list[Variant]],
               info: dict[str, tuple[int, tuple[str, ...]]]) -> int:
    """How many jobs `expand` would make, without making them."""
    per_method = sum(len(configs[m]) * len(_sources(spec, m)) for m in spec.methods)
    tasks_total = sum(len(tasks(spec.protocol, d, info[d][0], spec.classes, info[d][1],
                                spec.ood_table)) for d in spec.datasets)
    return per_method * tasks_total * len(spec.seeds)


def expand(spec: RunSpec, configs: dict[str, list[Variant]],
           info: dict[str, tuple[int, tuple[str, ...]]], data_dir: str,
           checkpoints: dict[str, tuple[str, str]] | None = None) -> list[Job]:
    """methods x configs x feature sources x data sets x tasks x seeds -> Jobs."""
    n = count_jobs(spec, configs, info)
    if n > MAX_JOBS:
        raise BenchError(f"the plan has {n:,} jobs; at most {MAX_JOBS:,} in one run (fewer "
                         "seeds, classes or --set values, or several runs)")
    jobs = []
    for m in spec.methods:
        for variant in configs[m]:
            for source in _sources(spec, m):
                encoder = configs[source][0].config if source != PIXEL else None
                for d in spec.datasets:
                    n_classes, ood = info[d]
                    for task in tasks(spec.protocol, d, n_classes, spec.classes, ood,
                                      spec.ood_table):
                        for seed in spec.seeds:
                            jobs.append(make_job(
                                m, variant.config, task, seed, spec.preset, data_dir,
                                spec.download, variant=variant.label, features=source,
                                encoder_config=encoder, compile=spec.compile,
                                precision=spec.precision, deterministic=spec.deterministic,
                                checkpoints=checkpoints, log=spec.log, log_uri=spec.log_uri))
    return jobs


def read_checkpoints(spec: RunSpec) -> dict[str, tuple[str, str, object]]:
    """{method: (path, SHA-256, the file mapped onto our keys)} of `--checkpoint`: each names a
    selected method with a network (or an encoder of --features) of the file's format."""
    from bench.files import sha256_of
    from bench.nn import imports

    out = {}
    networks = [m for m in dict.fromkeys([*spec.methods, *encoders(spec)])
                if _has_network(m) and METHODS.kind(m) not in ("network", "pretrained")]
    for method, path in spec.checkpoints:
        if not method:
            if len(networks) != 1:
                raise BenchError(f"--checkpoint {path}: name the method it is a network of "
                                 f"(--checkpoint METHOD={path}; networks selected: "
                                 f"{', '.join(networks) or 'none'})")
            method = networks[0]
        if METHODS.kind(method) == "pretrained":
            raise BenchError(f"--checkpoint {method}={path}: {method} fine-tunes ImageNet "
                             f"weights and scores the network it trains; give other weights "
                             f"with --set {method}.weights=PATH (a state dict of its backbone)")
        if method not in networks:
            raise BenchError(f"--checkpoint {method}={path}: {method} is not a selected method "
                             f"with a network ({', '.join(networks) or 'none selected'})")
        imported = imports.read(path)
        wanted = imports.METHOD_OF.get(imported.format)
        if wanted and wanted != method:
            raise BenchError(f"--checkpoint {path}: {imports.FORMATS[imported.format]} is a "
                             f"network of {wanted}, not of {method}")
        out[method] = (str(Path(path).resolve()), sha256_of(Path(path)), imported)
    return out


def apply_checkpoints(configs: dict[str, list[Variant]], checkpoints: dict,
                      overrides: tuple[str, ...] = ()) -> None:
    """The architecture each imported network implies (backbone, heads, input normalisation)
    set in its method's configs; a --set of one of those fields to another value is refused
    (the label would name a network that is not the one scored)."""
    import dataclasses

    for method, (path, _, imported) in checkpoints.items():
        fields = {f.name for f in dataclasses.fields(configs[method][0].config)}
        changes = {k: v for k, v in imported.architecture.items() if k in fields}
        for ov in parse_overrides(overrides):
            # a --set scoped to the method names its rows' label; a run-wide one does not
            if ov.field in changes and ov.method == method \
                    and ov.value != str(changes[ov.field]):
                raise BenchError(f"--set {ov.text}: the network of --checkpoint {path} fixes "
                                 f"{ov.field}={changes[ov.field]}; drop the --set (its label "
                                 "would name another network than the one scored)")
        configs[method] = [dataclasses.replace(v, config=dataclasses.replace(v.config, **changes))
                           for v in configs[method]]


def check_checkpoint_fits(spec: RunSpec, configs: dict[str, list[Variant]], checkpoints: dict,
                          data_dir: str) -> None:
    """Each imported network fits its method's network for each data set (channels, classes)."""
    from bench.nn import imports

    for method, (path, _, imported) in checkpoints.items():
        for d in spec.datasets:
            train = load_dataset(d, "train", data_dir, spec.download)
            model = _method_class(method)(configs[method][0].config).build_model(train)
            imports.check_fits(imported, model, path)


def check_plugins(spec: RunSpec, protocol: Protocol, configs: dict[str, list[Variant]],
                  data_dir: str) -> None:
    """Each plugin method, fitted on a tiny batch of the first data set, returns the scores it
    declares (bench/plugins.py); a BenchError naming it otherwise, before anything is written."""
    from bench.external import ExternalNetwork
    from bench.plugins import check_declared_scores

    plugins = [m for m in spec.methods if METHODS.plugin(m) is not None
               and not (is_classical(m) and encoders(spec))]
    networks = [m for m in configs if issubclass(_method_class(m), ExternalNetwork)]
    if not plugins and not networks:
        return
    d = spec.datasets[0]
    train = load_dataset(d, "train", data_dir, spec.download)
    test = load_dataset(d, "test", data_dir, spec.download)
    for m in networks:  # their outputs and weights' hash, in the config (and so the ids)
        configs[m] = [replace(v, config=_method_class(m).plan(v.config, train))
                      for v in configs[m]]
    if protocol.per_class:
        train = train.subset(train.labels == (spec.classes or (0,))[0])
    for m in plugins:
        check_declared_scores(m, _method_class(m), configs[m][0].config, train, test,
                              protocol.labeled)


def prepare_runs(spec: RunSpec, configs: dict[str, list[Variant]]) -> None:
    """What a method or feature source needs before its jobs (pretrained weights: there, or
    downloaded now), as each class declares (`prepare_run`)."""
    for name, variants in configs.items():
        prepare = getattr(_method_class(name), "prepare_run", None)
        if prepare is not None:
            for variant in variants:
                prepare(variant.config, spec.download, name)


def plan(spec: RunSpec) -> Plan:
    """All jobs of the spec; raises BenchError on bad input before anything is written."""
    protocol, warnings = validate(spec)
    configs = build_configs(spec)
    prepare_runs(spec, configs)
    checkpoints = read_checkpoints(spec)
    apply_checkpoints(configs, checkpoints, spec.overrides)
    data_dir = spec.data_dir or str(default_data_dir())
    info, skipped = probe(spec, protocol, data_dir)
    check_plugins(spec, protocol, configs, data_dir)
    check_checkpoint_fits(spec, configs, checkpoints, data_dir)
    shas = {m: (path, sha) for m, (path, sha, _) in checkpoints.items()}
    return Plan(expand(spec, configs, info, data_dir, shas), skipped, warnings)


def write_skipped(store: RunStore, skipped: dict[str, dict[str, str]], protocol: str) -> None:
    """A `skipped` record per missing OOD set, so the run directory says what was left out."""
    for dataset, missing in skipped.items():
        for name, reason in missing.items():
            atomic_write_json(store.root / "skipped" / f"{dataset}-{protocol}-{name}.json",
                              {"status": "skipped", "dataset": dataset, "ood_dataset": name,
                               "protocol": protocol, "reason": reason})


def _needs_running(store: RunStore, job: Job, retry_failed: bool, device: str) -> str | None:
    """Why a job must run ('' to run it plainly), or None to skip it."""
    record = store.record(job.job_id)
    if record is None:
        return ""
    if record.get("status") == "done":
        damaged = store.damaged_files(job.job_id)
        return f"redoing it: {', '.join(damaged)}" if damaged else None
    if record.get("status") == "failed":
        if retry_failed:
            return ""
        if record.get("error_kind") == "environment":
            return f"retrying it: it failed for a reason of the machine ({record.get('error')})"
        if device not in ("auto", record.get("device", "")):
            return f"retrying it on {device}: it failed on {record.get('device')}"
        return None
    return ""


def run(spec: RunSpec, executor=None, retry_failed: bool = False, notes: list[str] = ()
        ) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """Plan, skip what is finished, execute the rest, rebuild results.csv. `notes` are printed
    once the input is known to be valid. Returns rows, records and problems (damaged files)."""
    from bench.executors import LocalExecutor

    the_plan = plan(spec)
    check_writable(spec.out)
    out = Path(spec.out)
    for folder in RUN_FOLDERS:  # a shared directory whose leaderboard/ points elsewhere
        inside(out, folder)
    store = RunStore(out)
    for job in the_plan.jobs:  # a job or model folder planted as a link: refused, nothing written
        store.job_dir(job.job_id)
        for train_id in (job.train_id, job.encoder_train_id):
            if train_id:
                store.model_dir(train_id)
    for note in [*notes, *(f"bench: warning: {w}" for w in the_plan.warnings)]:
        log(note)
    for missing in the_plan.skipped.values():
        for reason in missing.values():
            warn(f"skipping OOD set: {reason}")
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(out)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + stable_hash(
        spec.to_json(), 6)
    atomic_write_json(out / "spec.json", {**spec.to_json(), "run_id": run_id})
    write_skipped(store, the_plan.skipped, spec.protocol)

    todo, done_before = [], 0
    for job in the_plan.jobs:
        why = _needs_running(store, job, retry_failed, spec.device)
        if why is None:
            done_before += 1
            continue
        if why:
            log(f"{job.job_id}: {why}")
        todo.append(job)
    if done_before:
        log(f"{done_before} of {len(the_plan.jobs)} jobs already in {out} (skipped)")
    executor = executor or LocalExecutor()
    executor.run(todo, str(out), spec.device, run_id)
    problems: list[str] = []
    rows = store.write_results(problems)
    records = [store.record(j.job_id) or {"job_id": j.job_id, "status": "missing"}
               for j in the_plan.jobs]
    return rows, records, problems


