"""A user's detector, network or data set: by import path (``my_pkg.mod:MyDetector``,
``path/to/file.py:MyDetector``) or by entry point (groups ``mcl_bench.methods`` and
``mcl_bench.datasets``).

A plugin is found by name in the registry (`bench.registry`), which asks here on a miss; it is
checked before anything is written (`check_method_class`, `check_declared_scores`) and named in
the job ids and rows with its import path and version: the distribution's version where the
module is installed, else the SHA-256 of its file, so two versions never share a job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.metadata
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError

GROUPS = {"method": "mcl_bench.methods", "dataset": "mcl_bench.datasets"}
TINY_TRAIN = 64  # training images of the plan-time check of a plugin's scores
TINY_TEST = 16  # test images it scores


@dataclass(frozen=True)
class PluginEntry:
    """A plugin in the registry: what to import, the folder to put on the Python path first
    ('' for an installed module), where it came from and its version."""

    target: str
    path: str = ""
    origin: str = ""  # "import path" or "entry point of <distribution>"
    version: str = ""  # "<distribution> <version>" or "sha256:<first 16 hex digits>"
    kind: str = ""  # a data set's kind (registry.KINDS): "plugin"
    obj: Any = None  # an object registered in this process (bench.evaluate's network)

    def identity(self) -> dict[str, str]:
        """What the plugin adds to the ids of its jobs and to its rows' code version."""
        return {"plugin": self.target, "plugin_version": self.version}


@contextlib.contextmanager
def user_code(what: str):
    """Run a user's code: whatever it raises becomes one BenchError line, `what: Type: first
    line of the message` (a BenchError of ours passes through)."""
    try:
        yield
    except BenchError:
        raise
    except Exception as exc:  # anything a plugin can raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise BenchError(f"{what}: {type(exc).__name__}: {first}") from None


def is_import_path(name: str) -> bool:
    module, sep, attr = name.rpartition(":")
    return bool(sep and module and attr.isidentifier())


def _add_path(folder: str) -> None:
    if folder and folder not in sys.path:
        sys.path.insert(0, folder)


def _split(target: str, what: str) -> tuple[str, str, str]:
    """(module name, attribute, folder to add) of ``module:attr`` or ``file.py:attr``."""
    module, _, attr = target.rpartition(":")
    if module.endswith(".py") or os.sep in module or "/" in module:
        path = Path(module).expanduser()
        if not path.is_file() or path.suffix != ".py":
            raise BenchError(f"{what} {target}: {module} is not a Python file")
        path = path.resolve()
        if path.name == "__init__.py":  # a package: imported by its name from its parent
            return path.parent.name, attr, str(path.parent.parent)
        return path.stem, attr, str(path.parent)
    return module, attr, os.getcwd()  # as `python -m`: the current folder comes first


def import_object(target: str, what: str, folder: str = "") -> Any:
    """The object ``module:attr`` names, importing the module (with `folder`, or the current
    one, on the Python path); BenchError in one line when it does not import."""
    module, attr, default_folder = _split(target, what)
    _add_path(folder or default_folder)
    with user_code(f"{what} {target}: cannot import {module}"):
        mod = importlib.import_module(module)
    if not hasattr(mod, attr):
        raise BenchError(f"{what} {target}: module {module} has no attribute {attr}")
    return getattr(mod, attr)


def _version_of(module_name: str) -> str:
    """The installed distribution's name and version, else the SHA-256 of the module's file."""
    top = module_name.split(".")[0]
    dists = importlib.metadata.packages_distributions().get(top, [])
    for dist in dists:
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if not path:
        return "unversioned"
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def entry_for_import_path(name: str, what: str) -> PluginEntry:
    """The registry entry of an import-path plugin (imported now: a bad path fails here). A
    file path registers under ``<file stem>:<attr>``."""
    module, attr, folder = _split(name, what)
    import_object(name, what)
    return PluginEntry(f"{module}:{attr}", folder, "import path", _version_of(module),
                       "plugin" if what == "dataset" else "")


def entry_points(what: str) -> dict[str, PluginEntry]:
    """The installed plugins of a kind: {name: entry}, from their distributions' metadata."""
    out = {}
    for ep in importlib.metadata.entry_points(group=GROUPS[what]):
        dist = getattr(ep, "dist", None)
        version = f"{dist.name} {dist.version}" if dist is not None else "unversioned"
        out[ep.name] = PluginEntry(ep.value, "", f"entry point of {version}", version,
                                   "plugin" if what == "dataset" else "")
    return out


def is_network(obj: Any) -> bool:
    """A network plugin rather than a detector: a torch module (class or instance) or a
    function (that returns one)."""
    import torch

    from bench.methods.base import Detector

    if inspect.isclass(obj):
        return issubclass(obj, torch.nn.Module) and not issubclass(obj, Detector)
    return isinstance(obj, torch.nn.Module) or inspect.isfunction(obj)


# --- checks of a plugin detector class ---------------------------------------------------------

def check_method_class(name: str, cls: Any) -> None:
    """A plugin detector is a class with fit and score, a frozen config dataclass whose fields
    have help and (numbers) a range, and declared scores; BenchError naming what is wrong."""
    from bench.config import field_meta, field_types, supported_type
    from bench.methods.base import Detector

    where = f"method {name}"
    if not inspect.isclass(cls):
        raise BenchError(f"{where}: {cls!r} is not a class (subclass bench.Detector)")
    missing = [m for m in ("fit", "score") if not callable(getattr(cls, m, None))]
    if missing or not issubclass(cls, Detector):
        raise BenchError(f"{where}: {cls.__name__} is not a detector (it needs fit(train, ctx) "
                         "and score(images) -> {score: array}; subclass bench.Detector)")
    if cls.score is Detector.score and not hasattr(cls, "method_scores"):
        raise BenchError(f"{where}: {cls.__name__} does not define score(images)")
    from bench.methods.network import NetworkDetector

    if issubclass(cls, NetworkDetector) and cls.training_loss is NetworkDetector.training_loss:
        raise BenchError(f"{where}: {cls.__name__} does not define training_loss(x, y)")
    config = getattr(cls, "Config", None)
    if config is None or not dataclasses.is_dataclass(config) \
            or not config.__dataclass_params__.frozen:
        raise BenchError(f"{where}: {cls.__name__}.Config must be a frozen dataclass "
                         "(@dataclass(frozen=True))")
    types = field_types(config)
    for f in dataclasses.fields(config):
        meta = field_meta(config, f.name)
        if not meta.get("help"):
            raise BenchError(f"{where}: config field {f.name} has no help (declare it with "
                             "bench.param(default, 'help', ge=..., le=...))")
        tp = types[f.name]
        if tp in (int, float) and not any(k in meta for k in ("ge", "gt", "le", "lt")):
            raise BenchError(f"{where}: config field {f.name} has no range (bench.param(..., "
                             "ge=..., le=...))")
        if not supported_type(tp):
            raise BenchError(f"{where}: config field {f.name} has a type --set cannot parse "
                             f"({tp}); use bool, int, float, str, a Literal or a tuple of them")
    if not cls.scores and not issubclass(cls, NetworkDetector):
        raise BenchError(f"{where}: {cls.__name__}.scores declares no score names")


def check_declared_scores(name: str, cls: Any, config: Any, train, test, labeled: bool) -> None:
    """Fit the plugin on a tiny batch and score a few images: the names it returns must be
    the ones it declares, each an array of one finite number per image."""
    import numpy as np

    from bench.methods.base import undeclared
    from bench.nn.context import FitContext

    changes = {k: v for k, v in (("epochs", 1), ("max_train_samples", TINY_TRAIN))
               if k in {f.name for f in dataclasses.fields(config)}}
    config = dataclasses.replace(config, **changes)
    train = train.subset(slice(0, TINY_TRAIN))
    images = test.images[:TINY_TEST]
    where = f"method {name}"
    with user_code(f"{where}: fails on a tiny batch ({TINY_TRAIN} training images)"):
        detector = cls(config)
        detector.fit(train, FitContext(labeled=labeled, progress=False))
        scores = detector.score(images)
    if not isinstance(scores, dict):
        raise BenchError(f"{where}: score() returned {type(scores).__name__}, not a dict "
                         "{score name: array}")
    wrong = undeclared(scores, cls.declared_scores(config, labeled and len(train.classes) > 1))
    if wrong:
        raise BenchError(f"{where}: score() {wrong}")
    for key, values in scores.items():
        values = np.asarray(values)
        if values.shape != (len(images),):
            raise BenchError(f"{where}: score {key} has shape {values.shape}, not "
                             f"({len(images)},): one number per image")
        if not np.isfinite(values.astype(float)).all():
            raise BenchError(f"{where}: score {key} is not finite on a tiny batch")


def dataset_loader(name: str, load: Any) -> Any:
    """A plugin data set's loader as the suite calls it, ``(split, source) -> ImageSet``: the
    user's function takes the split and, if it wants it, the DataSource (data dir, download);
    what it returns is checked."""
    from bench.datasets import ImageSet

    if not callable(load):
        raise BenchError(f"dataset {name}: {load!r} is not a function (split) -> ImageSet")
    try:
        takes_source = len(inspect.signature(load).parameters) >= 2
    except (TypeError, ValueError):
        takes_source = False

    def loader(split: str, source: Any) -> ImageSet:
        with user_code(f"dataset {name}: loading split {split} failed"):
            out = load(split, source) if takes_source else load(split)
        if not isinstance(out, ImageSet):
            raise BenchError(f"dataset {name}: the loader returned {type(out).__name__}, not a "
                             "bench.ImageSet (uint8 N x C x H x W images, int64 labels, class "
                             "names)")
        return out

    return loader
