"""Protocols as declarative tables: which split trains, which tests, which OOD sets, labels or not.

OpenOOD-style: a protocol is data, not a code path. Per in-distribution set, `OOD_TABLES` names its
OOD sets grouped as near (semantic shift with similar low-level statistics) and far (another
domain, or noise); docs/methods.md gives the reasons. `PROTOCOL_VERSION` is written into every
result row, so rows made under a changed table never mix with new ones. `tasks()` expands a
protocol and a data set into Tasks; `load_task()` turns a Task into a training set and test groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.datasets import ImageSet, convert_images, load_dataset, probe_dataset
from bench.errors import BenchError, DataMissingError, unknown_name
from bench.registry import DATASETS

# 1: one flat list of OOD sets per data set (rows written before the column existed);
# 2: near / far tables; CIFAR gains the noise sets, MNIST loses the digits (same classes);
#    the validation protocols ood-val and ood-labeled-val.
PROTOCOL_VERSION = "2"
VALIDATION_FRACTION = 0.1  # of the training split, held out by the -val protocols
VALIDATION_MAX = 1000  # images at most
VALIDATION_SEED = 0  # fixed: every method and seed tunes on the same held-out images


@dataclass(frozen=True)
class Protocol:
    name: str
    per_class: bool  # one task per normal class (train on that class only)
    labeled: bool  # class labels reach the method
    test: str  # "rest": the other classes of the test split; "ood": OOD sets; "validation":
    #            held-out training images vs the validation OOD sets
    description: str

    @property
    def uses_ood_sets(self) -> bool:
        return self.test in ("ood", "validation")


PROTOCOLS = {
    "one-class": Protocol(
        "one-class", per_class=True, labeled=False, test="rest",
        description="for each normal class c: train on the train split's images of c, test on "
                    "the whole test split, anomaly = label != c"),
    "ood": Protocol(
        "ood", per_class=False, labeled=False, test="ood",
        description="train on the whole train split without labels; test split vs each OOD set"),
    "ood-labeled": Protocol(
        "ood-labeled", per_class=False, labeled=True, test="ood",
        description="as ood, with class labels available to the method; also reports accuracy"),
    "ood-val": Protocol(
        "ood-val", per_class=False, labeled=False, test="validation",
        description="the tuning split of ood: train on the train split less a held-out 10%; "
                    "test those held-out images against the validation OOD sets, never a test "
                    "image or a test OOD set"),
    "ood-labeled-val": Protocol(
        "ood-labeled-val", per_class=False, labeled=True, test="validation",
        description="the tuning split of ood-labeled (as ood-val, with class labels)"),
}


@dataclass(frozen=True)
class OODTable:
    """The OOD sets of one in-distribution set: near (semantic shift, similar low-level
    statistics) and far (another domain, or noise)."""

    near: tuple[str, ...]
    far: tuple[str, ...]
    # for tuning (ood-val): made from held-out training images, unlike any test set
    validation: tuple[str, ...] = ("patches", "smooth-noise")
    # a table with its own images: the OOD sets of its validation lists, scored against its
    # in-distribution validation list to choose each score's settings (bench/tuning.py)
    tuning: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        return self.near + self.far

    def group(self, name: str) -> str:
        """near, far, validation, or other (an OOD set given with --ood that the table does not
        list)."""
        if name in self.near:
            return "near"
        if name in self.far:
            return "far"
        return "validation" if name in self.validation else "other"


NOISE = ("gaussian", "uniform")
_CIFAR_FAR = ("svhn", "lsun_resize", "imagenet_resize", *NOISE)
_ONLY_INTERP_NEAR = OODTable(near=("interp",), far=NOISE)

OOD_TABLES = {
    # CSI's tables; near = what CSI and OpenOOD call hard: another CIFAR, Interp. and the FIX sets
    # (re-made without resize artefacts); far = SVHN, the resized sets (artefacts give them away)
    # and noise
    "cifar10": OODTable(near=("cifar100", "interp", "lsun_fix", "imagenet_fix"), far=_CIFAR_FAR),
    "cifar100": OODTable(near=("cifar10", "interp", "lsun_fix", "imagenet_fix"), far=_CIFAR_FAR),
    "cifar100-fine": OODTable(near=("cifar10", "interp", "lsun_fix", "imagenet_fix"),
                              far=_CIFAR_FAR),
    "svhn": OODTable(near=("interp",), far=("cifar10", "cifar100", "lsun_resize",
                                            "imagenet_resize", "lsun_fix", "imagenet_fix",
                                            *NOISE)),
    # grey 28 px sets: only Interp. (mixtures of the set's own images) is near; the other domain
    # (handwritten digits vs clothes) is far. sklearn's digits are the same classes as MNIST,
    # so they are not OOD for MNIST.
    "fashion-mnist": OODTable(near=("interp",), far=("mnist", "digits", *NOISE)),
    "mnist": OODTable(near=("interp",), far=("fashion-mnist", *NOISE)),
    "digits": _ONLY_INTERP_NEAR,
    "digits32": _ONLY_INTERP_NEAR,
    "synthetic": _ONLY_INTERP_NEAR,
    "imagenet30": _ONLY_INTERP_NEAR,
}

@dataclass(frozen=True)
class OODBenchmark:
    """A named OOD table: per in-distribution set its near / far OOD sets, where its test
    images come from and how its rows are measured. A new table is one entry of `TABLES`: its
    sets and, if it brings its own images, a loader and a probe (``module:function``)."""

    name: str
    entries: dict[str, OODTable]
    # its own images, the in-distribution test split too: loader(data_dir, in_distribution,
    # set, size) -> ImageSet and probe(data_dir, in_distribution, set), with a fifth / fourth
    # argument "val" for the validation lists of an entry with `tuning`; "": the registry's sets
    loader: str = ""
    probe: str = ""
    metrics: tuple[str, ...] = ()  # metrics its rows carry beyond the suite's (bench/metrics.py)
    named: bool = True  # its name in job ids and file names (the suite's first table: not)
    description: str = ""
    # the search its scores' settings get where an entry lists tuning sets: what a row's
    # `tuning` column says (its version is in the job ids)
    tuning: str = ""
    # {a data set this table does not take: the one it takes instead, and why}
    instead: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, dataset: str) -> OODTable:
        return self.entries[dataset]

    def __contains__(self, dataset: object) -> bool:
        return dataset in self.entries

    def __iter__(self):
        return iter(self.entries)

    def items(self):
        return self.entries.items()

    def values(self):
        return self.entries.values()

    def load(self, data_dir, in_distribution: str, name: str, size: int,
             listing: str = "test") -> ImageSet:
        """One of its sets (`listing`: test, or val for the tuning sets: passed to the loader
        only then, so a table without validation lists keeps a 4-argument loader)."""
        from bench.registry import _load

        extra = (listing,) if listing != "test" else ()
        return _load(self.loader)(Path(str(data_dir)), in_distribution, name, size, *extra)

    def check_files(self, data_dir, in_distribution: str, name: str,
                    listing: str = "test") -> None:
        """DataMissingError if the files of one of its sets are not there (not decoded)."""
        if self.probe:
            from bench.registry import _load

            extra = (listing,) if listing != "test" else ()
            _load(self.probe)(Path(str(data_dir)), in_distribution, name, *extra)

    def tunes(self, dataset: str) -> bool:
        """Whether its scores' settings are chosen on validation lists for `dataset`."""
        return dataset in self.entries and bool(self.entries[dataset].tuning)

    def check_tuning_files(self, data_dir, dataset: str) -> None:
        """DataMissingError if its validation lists for `dataset` are not there."""
        if self.tunes(dataset):
            self.check_files(data_dir, dataset, dataset, "val")
            for name in self.entries[dataset].tuning:
                self.check_files(data_dir, dataset, name, "val")


DEFAULT_TABLE = "bench"  # --ood-table's default
OPENOOD_V15 = "openood-v1.5"
_OPENOOD_FAR = ("mnist", "svhn", "texture", "places365")
# every table by name (`--ood-table`); a row records the one that made it (`ood_table`)
TABLES: dict[str, OODBenchmark] = {
    DEFAULT_TABLE: OODBenchmark(DEFAULT_TABLE, OOD_TABLES, named=False,
                                description="this suite's near / far sets"),
    # OpenOOD v1.5's CIFAR benchmark (Zhang et al. 2023; openood/evaluation_api/datasets.py):
    # its CIFAR-100 is the 100 fine classes; settings chosen on val_<id> against val_tin
    OPENOOD_V15: OODBenchmark(
        OPENOOD_V15, {
            "cifar10": OODTable(near=("cifar100", "tin"), far=_OPENOOD_FAR, validation=(),
                                tuning=("tin",)),
            "cifar100-fine": OODTable(near=("cifar10", "tin"), far=_OPENOOD_FAR, validation=(),
                                      tuning=("tin",)),
        },
        loader="bench.datasets.openood:load", probe="bench.datasets.openood:probe",
        metrics=("fpr95_openood",),
        description="OpenOOD's image lists, in-distribution test images too; each score's "
                    "settings chosen on its validation lists, as its evaluator",
        tuning="openood-v1.5-val",
        instead={"cifar100": "cifar100-fine (OpenOOD's CIFAR-100 is the 100 fine classes; "
                             "cifar100 here is the 20 super-classes)"}),
}


def benchmark(name: str) -> OODBenchmark:
    """A table by name; BenchError naming the tables that exist."""
    if name not in TABLES:
        raise unknown_name("OOD table", name, TABLES)
    return TABLES[name]


def table_metrics(name: str) -> tuple[str, ...]:
    """The metrics beyond the suite's that the rows of a table carry (none for '' or an
    unknown table)."""
    return TABLES[name].metrics if name in TABLES else ()


def named_table(name: str) -> bool:
    """Whether a table's name goes into file names and titles (any table but the first)."""
    return bool(name) and (name not in TABLES or TABLES[name].named)


def get_table(name: str, dataset: str | None = None) -> OODBenchmark | OODTable:
    """A table by name, or its entry for `dataset`; BenchError naming what exists."""
    table = benchmark(name)
    if dataset is None:
        return table
    if dataset not in table:
        if dataset in table.instead:
            raise BenchError(f"--ood-table {name} has no entry for {dataset}: use "
                             f"{table.instead[dataset]}")
        raise BenchError(f"--ood-table {name} has no entry for {dataset} (it has "
                         f"{', '.join(table)})")
    return table[dataset]


@dataclass(frozen=True)
class Task:
    protocol: str
    dataset: str
    normal_class: int | None  # one-class only
    ood_sets: tuple[str, ...] = ()
    ood_table: str = DEFAULT_TABLE

    @property
    def label(self) -> str:
        return "all" if self.normal_class is None else str(self.normal_class)


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise unknown_name("protocol", name, PROTOCOLS)
    return PROTOCOLS[name]


def check_in_distribution(name: str) -> None:
    entry = DATASETS.entry(name)
    if entry.kind == "generated":
        raise BenchError(f"{name} is a generated OOD set; it cannot be a normal / "
                         "in-distribution set")
    if not entry.trainable:
        raise BenchError(f"{name} is an OOD test set with no training split; "
                         "it cannot be a normal / in-distribution set")


def ood_group(dataset: str, ood_set: str, table: str = DEFAULT_TABLE) -> str:
    """near / far / other for an OOD set of an in-distribution set in a table."""
    entry = TABLES[table].entries.get(dataset) if table in TABLES else None
    return entry.group(ood_set) if entry else "other"


def ood_sets_for(dataset: str, override: tuple[str, ...] | None, protocol: str = "ood",
                 table: str = DEFAULT_TABLE) -> tuple[str, ...]:
    """The OOD sets of a data set under a protocol: --ood if given (a subset of the table's
    sets when the table brings its own images), else the table's test sets (ood, ood-labeled)
    or validation sets (the -val protocols)."""
    validation = get_protocol(protocol).test == "validation"
    if benchmark(table).loader:  # its own images: only its sets
        entry = get_table(table, dataset)
        if validation:
            raise BenchError(f"--ood-table {table}: no validation sets here; use protocol ood "
                             "or ood-labeled")
        for name in override or ():
            if name not in entry.all:
                raise unknown_name(f"OOD set of {table} for {dataset}", name, entry.all)
        return tuple(override) if override else entry.all
    if override:
        for name in override:
            DATASETS.check(name)
            if name == dataset:
                raise BenchError(f"--ood {name}: the in-distribution set itself is not OOD")
            tests = benchmark(table).entries.get(dataset, OODTable((), ()))
            if validation and name in tests.all:
                raise BenchError(f"--ood {name}: a test OOD set of {dataset}; the validation "
                                 "protocols tune on other sets")
        return tuple(override)
    if dataset not in benchmark(table):
        raise BenchError(f"no default OOD sets for {dataset}; name them with --ood")
    table_entry = benchmark(table)[dataset]
    return table_entry.validation if validation else table_entry.all


def tasks(protocol: str, dataset: str, n_classes: int, classes: tuple[int, ...] | None,
          ood_sets: tuple[str, ...] = (), ood_table: str = DEFAULT_TABLE) -> list[Task]:
    proto = get_protocol(protocol)
    if proto.per_class:
        chosen = classes if classes is not None else tuple(range(n_classes))
        bad = [c for c in chosen if not 0 <= c < n_classes]
        if bad:
            raise BenchError(f"--classes {','.join(map(str, bad))}: {dataset} has classes "
                             f"0..{n_classes - 1}")
        return [Task(protocol, dataset, c) for c in chosen]
    return [Task(protocol, dataset, None, ood_sets, ood_table)]


def load_ood_set(name: str, reference: ImageSet, data_dir, download: bool) -> ImageSet:
    """An OOD set converted to the in-distribution image size and channel count."""
    if DATASETS.entry(name).kind == "generated":
        return DATASETS.load_object(name)(reference)
    ood = load_dataset(name, "test", data_dir, download)
    c, h, w = reference.shape
    images = convert_images(ood.images, c, (h, w))
    return ImageSet(images, ood.labels, ood.classes, name)


def available_ood_sets(ood_sets: tuple[str, ...], data_dir, download: bool, strict: bool,
                       dataset: str = "", table: str = DEFAULT_TABLE
                       ) -> tuple[tuple[str, ...], dict[str, str]]:
    """The OOD sets whose files are there (probed, not decoded), and {missing set: reason};
    strict makes a miss an error."""
    ok, missing = [], {}
    table_ = benchmark(table)
    for name in ood_sets:
        try:
            if table_.loader:
                table_.check_files(data_dir, dataset, name)
            elif DATASETS.entry(name).kind != "generated":
                probe_dataset(name, "test", data_dir, download)
            ok.append(name)
        except DataMissingError as exc:
            missing[name] = str(exc)
    if missing and strict:
        raise BenchError("; ".join(missing.values()) + " (--strict: missing OOD sets are errors)")
    return tuple(ok), missing


@dataclass
class TaskData:
    train: ImageSet
    test: ImageSet  # in-distribution / whole test split
    test_is_anomaly: torch.Tensor | None  # one-class: label != c; OOD: None (all normal)
    ood: dict[str, ImageSet]
    # a table with validation lists: (in-distribution, OOD) validation images the scores'
    # settings are chosen on; never a test image
    tuning: tuple[ImageSet, ImageSet] | None = None


def validation_split(train: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices kept for training, held-out indices) of the -val protocols: a fixed seeded
    VALIDATION_FRACTION of the training split, at most VALIDATION_MAX images."""
    n = len(train)
    held = min(VALIDATION_MAX, max(1, round(VALIDATION_FRACTION * n)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    return order[held:].sort().values, order[:held].sort().values


def _own_images_task(task: Task, train: ImageSet, data_dir) -> TaskData:
    """A table's own images: its in-distribution test split and each OOD set, at the training
    images' size."""
    table = benchmark(task.ood_table)
    size = train.shape[1]
    test = table.load(data_dir, task.dataset, task.dataset, size)
    test = ImageSet(test.images, test.labels, train.classes, task.dataset)
    ood = {name: table.load(data_dir, task.dataset, name, size) for name in task.ood_sets}
    tuning = None
    if table.tunes(task.dataset):
        id_val = table.load(data_dir, task.dataset, task.dataset, size, "val")
        parts = [table.load(data_dir, task.dataset, n, size, "val")
                 for n in table[task.dataset].tuning]
        ood_val = ImageSet(torch.cat([p.images for p in parts]),
                           torch.cat([p.labels for p in parts]), (), "+".join(
                               table[task.dataset].tuning))
        tuning = (id_val, ood_val)
    return TaskData(train, test, None, ood, tuning)


def load_task(task: Task, data_dir, download: bool) -> TaskData:
    train = load_dataset(task.dataset, "train", data_dir, download)
    proto = get_protocol(task.protocol)
    if proto.uses_ood_sets and benchmark(task.ood_table).loader:
        return _own_images_task(task, train, data_dir)
    if proto.test == "validation":
        keep, held = validation_split(train)
        test = train.subset(held)
        ood = {name: load_ood_set(name, test, data_dir, download) for name in task.ood_sets}
        return TaskData(train.subset(keep), test, None, ood)
    test = load_dataset(task.dataset, "test", data_dir, download)
    if proto.per_class:
        c = task.normal_class
        return TaskData(train.subset(train.labels == c), test, test.labels != c, {})
    ood = {name: load_ood_set(name, test, data_dir, download) for name in task.ood_sets}
    return TaskData(train, test, None, ood)
