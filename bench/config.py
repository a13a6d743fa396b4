"""Frozen configuration: the RunSpec of a run, per-method configs, presets and ``--set`` overrides.

The config dataclasses are the one source of every field's type, default (the `paper` preset),
valid range and one-line help (`param`). Presets are TOML layers over those defaults: `paper` is
the defaults themselves, `standard` and `quick` override what they must. ``--set key=value``
overrides come last; ``--set key=a,b,c`` sweeps a field (one config per value, the cross product
over several swept keys).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import sys
import types
import typing
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from bench.errors import BenchError, unknown_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESETS = ("quick", "standard", "paper", "auto")
PRESET_HELP = {
    "quick": "small backbone, 512 training images, 50 epochs: the default run in CPU minutes",
    "standard": "the whole training split of each class, a mid-size schedule: CPU hours",
    "paper": "the papers' settings (the config defaults; CIFAR ResNet-18/34, hundreds of "
             "epochs): a GPU",
    "auto": "paper on CUDA, quick otherwise (the default)",
}
ALL_SECTION = "all"  # a preset section applied to every method config that has the field
BOUNDS = ("ge", "gt", "le", "lt")


def param(default: Any, help: str, *, ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None, score: bool = False) -> Any:
    """A config field with its one-line help and valid range; ``score=True`` marks a field that
    changes only scoring (jobs differing in it share the trained model)."""
    meta = {"help": help, "score": score}
    meta.update({k: v for k, v in zip(BOUNDS, (ge, gt, le, lt)) if v is not None})
    return dataclasses.field(default=default, metadata=meta)


def score_field(default: Any, help: str = "", **bounds: float) -> Any:
    return param(default, help, score=True, **bounds)


def field_meta(config_cls: type, name: str) -> dict[str, Any]:
    """A field's metadata as declared by the nearest class that gave it help (a subclass may
    re-declare a field only to change its default)."""
    for klass in config_cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and "help" in f.metadata:
            return dict(f.metadata)
    return {}


def is_score_field(config_cls: type, name: str) -> bool:
    return bool(field_meta(config_cls, name).get("score"))


def as_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def training_dict(config: Any) -> dict[str, Any]:
    """The fields that change the trained model (everything but score fields)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if not is_score_field(type(config), f.name)}


def stable_hash(obj: Any, length: int = 10) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


# --- types the --set parser handles ------------------------------------------------------------

def _union_args(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if (members := _union_args(tp)) is not None:
        return " or ".join(type_name(m) for m in members)
    if _is_tuple(tp):
        return f"comma-separated {type_name(typing.get_args(tp)[0])}s"
    return getattr(tp, "__name__", str(tp))


def supported_type(tp: Any) -> bool:
    """Whether `coerce` can parse a --set value into `tp`."""
    if tp in (bool, int, float, str) or typing.get_origin(tp) is Literal:
        return True
    if (members := _union_args(tp)) is not None:
        return all(supported_type(m) for m in members)
    if _is_tuple(tp):
        args = typing.get_args(tp)
        return len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str)
    return False


def coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` (a string from --set or a TOML value) as type `tp`, or a BenchError."""
    if typing.get_origin(tp) is Literal:
        for choice in typing.get_args(tp):
            if value == choice and type(value) is type(choice) or (
                    isinstance(value, str) and str(choice) == value.strip()):
                return choice
        raise BenchError(f"{where}: expected {type_name(tp)}, got {value!r}")
    if (members := _union_args(tp)) is not None:
        for member in members:
            try:
                return coerce(value, member, where)
            except BenchError:
                continue
        raise BenchError(f"{where}: expected {type_name(tp)}, got {value!r}")
    if _is_tuple(tp):
        item = typing.get_args(tp)[0]
        parts = value if isinstance(value, (list, tuple)) else \
            [p for p in str(value).split(",") if p.strip()]
        try:
            return tuple(coerce(p, item, where) for p in parts)
        except BenchError:
            raise BenchError(f"{where}: expected {type_name(tp)}, got {value!r}") from None
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise BenchError(f"{where}: expected {type_name(tp)}, got {value!r}") from None
    raise BenchError(f"{where}: unsupported field type {tp!r}")


def field_types(config_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def range_text(meta: dict[str, Any]) -> str:
    """``>= 1``, ``> 0, <= 1`` ... from a field's bounds ('' when unbounded)."""
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return ", ".join(f"{signs[k]} {meta[k]:g}" for k in BOUNDS if k in meta)


def check_range(config_cls: type, name: str, value: Any) -> None:
    """ValueError naming the field when a number lies outside the field's declared range."""
    meta = field_meta(config_cls, name)
    numbers = value if isinstance(value, tuple) else (value,)
    for v in numbers:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        ok = all((k != "ge" or v >= meta[k]) and (k != "gt" or v > meta[k])
                 and (k != "le" or v <= meta[k]) and (k != "lt" or v < meta[k])
                 for k in BOUNDS if k in meta)
        if not ok:
            raise ValueError(f"{name}={value!r} is out of range (must be {range_text(meta)})")


@dataclass(frozen=True)
class Config:
    """Base of every method config: checks each value against its field's range when built."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_range(type(self), f.name, getattr(self, f.name))


# --- presets and overrides ---------------------------------------------------------------------

def load_preset(name: str) -> dict[str, dict[str, Any]]:
    """A preset's TOML sections; `paper` is the config defaults (an empty layer)."""
    if name not in PRESETS or name == "auto":
        raise unknown_name("preset", name, [p for p in PRESETS if p != "auto"])
    if name == "paper":
        return {}
    text = resources.files("bench.presets").joinpath(f"{name}.toml").read_text()
    return tomllib.loads(text)


def resolve_preset(name: str, device_type: str) -> str:
    """``auto`` is ``paper`` on CUDA and ``quick`` otherwise."""
    if name not in PRESETS:
        raise unknown_name("preset", name, PRESETS)
    if name == "auto":
        return "paper" if device_type == "cuda" else "quick"
    return name


@dataclass(frozen=True)
class Override:
    """One ``--set [method.]field=value``; without a method it applies to every method having it."""

    method: str | None
    field: str
    value: str
    text: str


def parse_overrides(items: typing.Iterable[str]) -> list[Override]:
    out = []
    for text in items:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise BenchError(f"--set {text!r}: expected key=value, e.g. mcl.alpha=0.1")
        method, dot, name = key.rpartition(".")
        out.append(Override(method if dot else None, name, value.strip(), text))
    return out


def _applies(ov: Override, method: str, types_: dict[str, Any]) -> bool:
    return ov.method == method or (ov.method is None and ov.field in types_)


def preset_values(method: str, config_cls: type, preset: dict[str, dict[str, Any]]
                  ) -> dict[str, Any]:
    """The preset's [all] and [method] sections as typed field values."""
    types_ = field_types(config_cls)
    values: dict[str, Any] = {}
    for key, value in preset.get(ALL_SECTION, {}).items():
        if key in types_:
            values[key] = coerce(value, types_[key], f"preset [{ALL_SECTION}] {key}")
    for key, value in preset.get(method, {}).items():
        if key not in types_:
            raise unknown_name(f"field of {method} in the preset", key, types_)
        values[key] = coerce(value, types_[key], f"preset [{method}] {key}")
    return values


@dataclass(frozen=True)
class Variant:
    """One config of a method and the --set assignments that made it (`label`, '' for none)."""

    config: Any
    label: str


def build_method_configs(method: str, config_cls: type, preset: dict[str, dict[str, Any]],
                         overrides: list[Override]) -> list[Variant]:
    """Defaults, then the preset, then --set; a comma list in --set (for a field that is not a
    tuple) sweeps it: one Variant per value, the cross product over several swept keys.

    A Variant's label names the assignments that tell it apart in a leaderboard: the swept
    fields and the ones set for this method by name (``mcl.beta=3``); a run-wide ``--set
    epochs=5`` applies to every method alike and is not named."""
    types_ = field_types(config_cls)
    base = preset_values(method, config_cls, preset)
    choices: dict[str, list[tuple[Any, str]]] = {}
    named: set[str] = set()
    for ov in overrides:
        if not _applies(ov, method, types_):
            continue
        if ov.field not in types_:
            raise unknown_name(f"--set field of {method}", ov.field, types_)
        tp = types_[ov.field]
        texts = [ov.value] if _is_tuple(tp) else [v.strip() for v in ov.value.split(",")]
        if not all(texts):
            raise BenchError(f"--set {ov.text}: empty value in the list")
        values = []
        for text in dict.fromkeys(texts):
            value = coerce(text, tp, f"--set {ov.text}")
            try:
                check_range(config_cls, ov.field, value)
            except ValueError as exc:
                raise BenchError(f"--set {ov.text}: {exc}") from None
            values.append((value, f"{ov.field}={_show(value)}"))
        choices[ov.field] = values  # a later --set of the same field wins
        if ov.method == method or len(values) > 1:
            named.add(ov.field)
        else:
            named.discard(ov.field)
    out = []
    for combo in itertools.product(*choices.values()):
        values = {**base, **{name: v for name, (v, _) in zip(choices, combo)}}
        try:
            config = config_cls(**values)
        except (TypeError, ValueError) as exc:
            raise BenchError(f"{method}: invalid configuration ({exc})") from None
        out.append(Variant(config, ",".join(label for name, (_, label) in zip(choices, combo)
                                            if name in named)))
    return out


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "-".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def build_method_config(method: str, config_cls: type, preset: dict[str, dict[str, Any]],
                        overrides: list[Override]) -> Any:
    """The one config of `method` (a BenchError if the overrides sweep a field)."""
    variants = build_method_configs(method, config_cls, preset, overrides)
    if len(variants) != 1:
        raise BenchError(f"{method}: --set sweeps are not allowed here")
    return variants[0].config


def check_overrides(overrides: list[Override], methods: typing.Sequence[str],
                    config_classes: dict[str, type]) -> None:
    """Every override must name a selected method (if scoped) and a field that exists."""
    for ov in overrides:
        if ov.method is not None:
            if ov.method not in methods:
                raise BenchError(f"--set {ov.text}: method {ov.method!r} is not among the "
                                 f"selected methods ({', '.join(methods)})")
            continue
        if not any(ov.field in field_types(config_classes[m]) for m in methods):
            every = sorted({f for m in methods for f in field_types(config_classes[m])})
            raise unknown_name("--set field", ov.field, every)


def describe_fields(config_cls: type, method: str) -> list[dict[str, str]]:
    """One row per field: name, type, range, default per preset, help (`bench list fields`)."""
    layers = {p: preset_values(method, config_cls, load_preset(p))
              for p in ("paper", "standard", "quick")}
    rows = []
    for f in dataclasses.fields(config_cls):
        meta = field_meta(config_cls, f.name)
        tp = field_types(config_cls)[f.name]
        row = {"field": f.name, "type": type_name(tp), "range": range_text(meta),
               "scoring only": "yes" if meta.get("score") else ""}
        for preset, values in layers.items():
            row[preset] = _show(values.get(f.name, f.default))
        row["help"] = meta.get("help", "")
        rows.append(row)
    return rows


# torch.compile's modes (`--compile MODE`; reduce-overhead adds CUDA graphs of the step on CUDA)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(value: bool | str | None) -> str:
    """A --compile value as a mode: '' (eager) for False / None / '', default for True."""
    if value is True:
        return "default"
    if not value:
        return ""
    if value not in COMPILE_MODES:
        raise unknown_name("--compile mode", str(value), COMPILE_MODES)
    return str(value)


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides which jobs a run has and what they compute."""

    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    protocol: str = "one-class"
    classes: tuple[int, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    preset: str = "quick"
    overrides: tuple[str, ...] = ()
    out: str = "runs"
    data_dir: str = ""
    device: str = "auto"
    download: bool = True
    ood: tuple[str, ...] | None = None
    strict: bool = False
    compile: str = ""  # torch.compile mode ("": eager; default, reduce-overhead, max-autotune)
    precision: str = "auto"
    features: tuple[str, ...] = ("pixel",)
    deterministic: bool = False
    ood_table: str = "bench"
    checkpoints: tuple[tuple[str, str], ...] = ()  # (method or "", path) of --checkpoint
    log: tuple[str, ...] = ()  # experiment trackers each finished job is logged to
    log_uri: str = ""  # MLflow's tracking URI ('': SQLite, <out>/mlflow.db)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
