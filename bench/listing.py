"""`bench list`: methods (with the post-hoc scores each adds and the plugins installed), data
sets, protocols and OOD tables, presets, and the config fields of a method."""

from __future__ import annotations

from bench.console import echo
from bench.errors import BenchError


def _list_methods() -> None:
    from bench.nn.posthoc import POSTHOC
    from bench.protocols import PROTOCOLS
    from bench.registry import METHODS

    echo(f"{'method':<10} {'kind':<16} {'protocols':<28} {'own scores':<32} what")
    adds = {}
    for name in METHODS:
        cls = METHODS.load_object(name)
        runs = ", ".join(p for p in ("one-class", "ood", "ood-labeled")
                         if cls.skip(PROTOCOLS[p]) is None or cls.kind == "classical")
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        doc += "" if cls.in_default_run else " [by name only]"
        plugin = METHODS.plugin(name)
        doc += f" [plugin: {plugin.origin}, {plugin.version}]" if plugin is not None else ""
        echo(f"{name:<10} {cls.kind:<16} {runs:<28} {', '.join(cls.scores):<32} {doc}")
        if hasattr(cls, "posthoc_names"):
            adds.setdefault((cls.posthoc_names(False), cls.posthoc_names(True)), []).append(name)
    echo("\npost-hoc scores added to each network's own (bench/nn/posthoc.py's table):")
    for (unlabeled, labeled), names in adds.items():
        extra = [s for s in labeled if s not in unlabeled]
        echo(f"  {', '.join(names)}: {', '.join(unlabeled)}"
                   + (f"; with class labels also {', '.join(extra)}" if extra else ""))
    echo("  needs of each score: " + "; ".join(
        f"{n} ({', '.join(sorted(s.needs))})" for n, s in POSTHOC.items()))
    echo("classical methods run in ood-labeled on the features of a labeled network "
               "(--features)")
    echo("feature sources of --features: the methods with a network, and ImageNet-pretrained "
               "networks (<torchvision model>-in1k, e.g. resnet152-in1k; timm-<model>)")


def _list_datasets() -> None:
    from bench.registry import DATASETS, KINDS

    for name in DATASETS:
        echo(f"{name:<16} {KINDS[DATASETS.entry(name).kind]}")


def _list_protocols() -> None:
    from bench.protocols import PROTOCOL_VERSION, PROTOCOLS, TABLES

    for p in PROTOCOLS.values():
        echo(f"{p.name:<12} {p.description}")
    for name, table in TABLES.items():
        source = f" ({table.description})" if table.loader else ""
        echo(f"\nOOD table {name}{source}, protocol version {PROTOCOL_VERSION}"
                   + ("; the -val protocols use the validation sets" if not source else "") + ":")
        for d, t in table.items():
            validation = f"  validation: {', '.join(t.validation)}" if t.validation else ""
            if t.tuning:  # the lists its scores' settings are chosen on
                validation += f"  settings chosen on: {d} vs {', '.join(t.tuning)} (val lists)"
            echo(f"  {d:<14} near: {', '.join(t.near):<40} far: {', '.join(t.far)}"
                       + validation)


def _list_presets() -> None:
    from bench.config import PRESET_HELP

    for name, text in PRESET_HELP.items():
        echo(f"{name:<9} {text}")


def _list_fields(method: str | None) -> None:
    from bench.config import describe_fields
    from bench.registry import method_class

    if not method:
        raise BenchError("bench list fields METHOD: name a method, e.g. bench list fields mcl")
    rows = describe_fields(method_class(method).Config, method)
    for r in rows:  # one of 'a', 'b' -> a|b
        if r["type"].startswith("one of "):
            r["type"] = "|".join(v.strip().strip("'") for v in r["type"][7:].split(","))
    columns = ["field", "type", "range", "paper", "standard", "quick", "help"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns[:-1]}
    echo(f"{method}: config fields; paper = the config defaults; * = changes scoring only "
               "(reuses the trained model)")
    echo("  ".join(c.ljust(widths[c]) for c in columns[:-1]) + "  help")
    for r in rows:
        star = " *" if r["scoring only"] else ""
        echo("  ".join(r[c].ljust(widths[c]) for c in columns[:-1]) + "  " + r["help"]
                   + star)


def show(what: str, method: str | None = None) -> None:
    """Print one listing: methods, datasets, protocols, presets, or fields of `method`."""
    listers = {"methods": _list_methods, "datasets": _list_datasets,
               "protocols": _list_protocols, "presets": _list_presets}
    listers.get(what, lambda: _list_fields(method))()
