"""One lazy registry from name to ``"module:object"``; importing happens on first use.

Every question about a name is asked here: whether it exists (with a did-you-mean), what it is
(`kind`: a data set's entry says where it comes from; a method's class says whether it is a
classical detector, a self-supervised network or a labeled one) and which names are of a kind
(`names(kind=...)`, as timm's ``list_models(module=...)``). No other module keeps lists of names.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench.errors import unknown_name


class Registry:
    """Names of one sort (`what`: method, dataset) to their entries; a user's plugins join on
    first use: installed entry points, and import paths (``module:Object``, bench/plugins.py)."""

    def __init__(self, what: str, entries: dict[str, Any]):
        self.what = what
        self._entries = dict(entries)
        self._scanned = False

    def register(self, name: str, entry: Any) -> None:
        """Add `name` (a plugin's method or data set): ``"module:object"`` or an entry."""
        self._entries[name] = entry

    def _scan_entry_points(self) -> None:
        if not self._scanned:
            self._scanned = True
            from bench.plugins import GROUPS, entry_points

            if self.what in GROUPS:
                for name, entry in entry_points(self.what).items():
                    self._entries.setdefault(name, self._plugin_entry(entry))

    def _plugin_entry(self, entry: Any) -> Any:
        if self.what != "dataset":
            return entry
        return DatasetEntry(entry.target, "plugin", path=entry.path, plugin=entry)

    def _find(self, name: str) -> bool:
        """Whether `name` is known, registering an entry point or an import path on a miss (a
        path that does not import is a BenchError)."""
        if name in self._entries:
            return True
        self._scan_entry_points()
        if name in self._entries:
            return True
        from bench.plugins import GROUPS, entry_for_import_path, is_import_path

        if self.what in GROUPS and isinstance(name, str) and is_import_path(name):
            entry = self._plugin_entry(entry_for_import_path(name, self.what))
            self._entries[name] = entry
            self._entries.setdefault(entry.target, entry)  # a file path's module:object name
            return True
        return False

    def canonical(self, name: str) -> str:
        """The name rows and jobs use: a file path plugin's ``<file stem>:<object>``."""
        from bench.plugins import is_import_path

        plugin = self.plugin(name)
        return plugin.target if plugin is not None and is_import_path(name) else name

    def plugin(self, name: str) -> Any:
        """The PluginEntry of a plugin (its version, origin, folder), None for a built-in."""
        from bench.plugins import PluginEntry

        entry = self.entry(name)
        return entry if isinstance(entry, PluginEntry) else getattr(entry, "plugin", None)

    def __contains__(self, name: object) -> bool:
        if name in self._entries:
            return True
        self._scan_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._scan_entry_points()
        return iter(list(self._entries))

    def names(self, kind: str | None = None) -> list[str]:
        """Every name in registration order (installed plugins last), or those of one kind."""
        return [n for n in self if kind is None or self.kind(n) == kind]

    def kind(self, name: str) -> str:
        """What `name` is: its entry's `kind`, else its object's (a method class's `kind`)."""
        entry = self.entry(name)
        return getattr(entry, "kind", None) or getattr(self.load_object(name), "kind", "")

    def check(self, name: str) -> None:
        """Raise a BenchError naming the closest valid names if `name` is not registered."""
        if not self._find(name):
            raise unknown_name(self.what, name, self._entries)

    def entry(self, name: str) -> Any:
        self.check(name)
        return self._entries[name]

    def target(self, name: str) -> str:
        entry = self.entry(name)
        return entry if isinstance(entry, str) else entry.target

    def load_object(self, name: str) -> Any:
        entry = self.entry(name)
        if isinstance(entry, str):
            return _load(entry)
        plugin = self.plugin(name)
        if plugin is None:
            return _load(entry.target)
        return _load_plugin(self.what, name, plugin)


def _load_plugin(what: str, name: str, plugin: Any) -> Any:
    """A plugin's object, imported with its folder on the Python path and checked once."""
    if plugin.obj is not None:
        return plugin.obj
    key = (what, plugin.target, plugin.path)
    if key not in _PLUGINS:
        from bench import plugins

        obj = plugins.import_object(plugin.target, what, plugin.path)
        if what == "dataset":
            obj = plugins.dataset_loader(name, obj)
        elif plugins.is_network(obj):  # a trained network: scored post hoc (bench/external.py)
            from bench.external import network_class

            obj = network_class(plugin.target, obj)
        else:
            plugins.check_method_class(name, obj)
        _PLUGINS[key] = obj
    return _PLUGINS[key]


_PLUGINS: dict[tuple[str, str, str], Any] = {}


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


METHODS = Registry("method", {
    # classical baselines on flattened pixels or learned features (PyOD)
    "ocsvm": "bench.methods.classical:OCSVM",
    "iforest": "bench.methods.classical:IForest",
    "knn": "bench.methods.classical:KNN",
    "lof": "bench.methods.classical:LOF",
    "pca": "bench.methods.classical:PCA",
    "ecod": "bench.methods.classical:ECOD",
    "copod": "bench.methods.classical:COPOD",
    "kde": "bench.methods.classical:KDE",
    "deepsvdd": "bench.methods.classical:DeepSVDD",
    # self-supervised
    "simclr": "bench.methods.simclr:SimCLR",
    "rotnet": "bench.methods.rotnet:RotNet",
    "csi": "bench.methods.csi:CSI",
    "mcl": "bench.methods.mcl:MCL",
    # ImageNet-pretrained, fine-tuned on the normal class
    "panda": "bench.methods.panda:PANDA",
    "msc": "bench.methods.msc:MSC",
    # labeled OOD baselines
    "ce": "bench.methods.supervised:CrossEntropy",
    "supclr": "bench.methods.supervised:SupCLR",
    "sup-csi": "bench.methods.supervised:SupCSI",
})


KINDS = {
    "embedded": "embedded, offline",
    "download": "torchvision files, downloadable, MD5-checked",
    "folder": "image folder from its authors' archive (not downloadable)",
    "ood-folder": "OOD test set, image folder from its authors' archive (not downloadable)",
    "generated": "generated OOD set (from the in-distribution test images; validation sets from "
                 "held-out training images)",
    "plugin": "a user's data set (entry point or import path), loaded by its function",
}


@dataclass(frozen=True)
class DatasetEntry:
    """Where a data set comes from: its loader ``module:function``, its kind (KINDS) and, for
    sets with files, the function that checks they are there without decoding them."""

    target: str
    kind: str
    probe: str = ""
    n_classes: int = 0  # classes of a set with a training split (one-class: one job each)
    class_names: str = ""  # "module:TUPLE" of the class names, for figure labels
    path: str = ""  # a plugin's folder, put on the Python path before importing it
    plugin: Any = None  # a plugin's PluginEntry (bench/plugins.py)

    def names_of_classes(self) -> tuple[str, ...] | None:
        return tuple(_load(self.class_names)) if self.class_names else None

    @property
    def trainable(self) -> bool:
        """Has a training split: may be a normal / in-distribution set."""
        return self.kind in ("embedded", "download", "folder", "plugin")

    def check_files(self, name: str, split: str, source) -> None:
        """DataMissingError / ChecksumError if the files of `split` are not usable."""
        if self.probe:
            _load(self.probe)(name, split, source)


_TV = "bench.datasets.torchvision_sets"
_FOLDERS = "bench.datasets.folders"
DATASETS = Registry("dataset", {
    "digits": DatasetEntry("bench.datasets.embedded:load_digits16", "embedded", n_classes=10),
    "digits32": DatasetEntry("bench.datasets.embedded:load_digits32", "embedded", n_classes=10),
    "synthetic": DatasetEntry("bench.datasets.embedded:load_synthetic", "embedded", n_classes=4),
    "mnist": DatasetEntry(f"{_TV}:load_mnist", "download", f"{_TV}:probe", 10),
    "fashion-mnist": DatasetEntry(f"{_TV}:load_fashion_mnist", "download", f"{_TV}:probe", 10,
                                  f"{_TV}:FASHION_CLASSES"),
    "cifar10": DatasetEntry(f"{_TV}:load_cifar10", "download", f"{_TV}:probe", 10,
                            f"{_TV}:CIFAR10_CLASSES"),
    "cifar100": DatasetEntry(f"{_TV}:load_cifar100", "download", f"{_TV}:probe", 20),
    "cifar100-fine": DatasetEntry(f"{_TV}:load_cifar100_fine", "download", f"{_TV}:probe", 100),
    "svhn": DatasetEntry(f"{_TV}:load_svhn", "download", f"{_TV}:probe", 10),
    "lsun_resize": DatasetEntry(f"{_FOLDERS}:load_lsun_resize", "ood-folder", f"{_FOLDERS}:probe"),
    "imagenet_resize": DatasetEntry(f"{_FOLDERS}:load_imagenet_resize", "ood-folder",
                                    f"{_FOLDERS}:probe"),
    "lsun_fix": DatasetEntry(f"{_FOLDERS}:load_lsun_fix", "ood-folder", f"{_FOLDERS}:probe"),
    "imagenet_fix": DatasetEntry(f"{_FOLDERS}:load_imagenet_fix", "ood-folder",
                                 f"{_FOLDERS}:probe"),
    "imagenet30": DatasetEntry(f"{_FOLDERS}:load_imagenet30", "folder", f"{_FOLDERS}:probe", 30),
    "interp": DatasetEntry("bench.datasets.generated:make_interp", "generated"),
    "gaussian": DatasetEntry("bench.datasets.generated:make_gaussian", "generated"),
    "uniform": DatasetEntry("bench.datasets.generated:make_uniform", "generated"),
    "patches": DatasetEntry("bench.datasets.generated:make_patches", "generated"),
    "smooth-noise": DatasetEntry("bench.datasets.generated:make_smooth_noise", "generated"),
})

def method_class(name: str) -> Any:
    """The class of a method, or of a pretrained feature source (`<torchvision model>-in1k`,
    `timm-<model>`: a naming rule, not a list, since any such model serves)."""
    if name.endswith("-in1k") or name.startswith("timm-"):
        return _load("bench.methods.pretrained:encoder_class")(name)
    return METHODS.load_object(name)


FEATURED_METHOD = "mcl"  # the suite's subject: the job figures' and the significance control's default
