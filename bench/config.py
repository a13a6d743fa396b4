"""Frozen configuration: the RunSpec of a run, per-method configs, presets and ``--set`` overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import typing
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from bench.errors import BenchError, unknown_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESETS = ("quick", "paper", "auto")
ALL_SECTION = "all"  # a preset section applied to every method config that has the field


def score_field(default: Any, doc: str = "") -> Any:
    """A config field that changes only scoring: jobs differing in it share the trained model."""
    return dataclasses.field(default=default, metadata={"score": True, "doc": doc})


def is_score_field(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("score"))


def as_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def training_dict(config: Any) -> dict[str, Any]:
    """The fields that change the trained model (everything but score fields)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if not is_score_field(f)}


def stable_hash(obj: Any, length: int = 10) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` (a string from --set or a TOML value) as type `tp`, or a BenchError."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise BenchError(f"{where}: expected {_type_name(tp)}, got {value!r}")
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
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise BenchError(f"{where}: expected {_type_name(tp)}, got {value!r}") from None
    raise BenchError(f"{where}: unsupported field type {tp!r}")


def field_types(config_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def load_preset(name: str) -> dict[str, dict[str, Any]]:
    if name not in ("quick", "paper"):
        raise unknown_name("preset", name, PRESETS)
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
        if not sep or not key:
            raise BenchError(f"--set {text!r}: expected key=value, e.g. mcl.alpha=0.1")
        method, dot, name = key.rpartition(".")
        out.append(Override(method if dot else None, name, value.strip(), text))
    return out


def build_method_config(method: str, config_cls: type, preset: dict[str, dict[str, Any]],
                        overrides: list[Override]) -> Any:
    """Defaults, then the preset's [all] and [method] sections, then --set overrides."""
    types = field_types(config_cls)
    values: dict[str, Any] = {}
    for key, value in preset.get(ALL_SECTION, {}).items():
        if key in types:
            values[key] = coerce(value, types[key], f"preset [{ALL_SECTION}] {key}")
    for key, value in preset.get(method, {}).items():
        if key not in types:
            raise unknown_name(f"field of {method} in the preset", key, types)
        values[key] = coerce(value, types[key], f"preset [{method}] {key}")
    for ov in overrides:
        if ov.method is None and ov.field in types or ov.method == method:
            if ov.field not in types:
                raise unknown_name(f"--set field of {method}", ov.field, types)
            values[ov.field] = coerce(ov.value, types[ov.field], f"--set {ov.text}")
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise BenchError(f"{method}: invalid configuration ({exc})") from None


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
    compile: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
