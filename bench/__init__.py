"""mcl-bench: self-supervised anomaly and OOD detection benchmarks (MCL, CSI, SimCLR, Rot, PyOD).

The Python API (docs/extending.md): `bench.run` returns the tidy rows of a run; `read_rows`,
`leaderboard`, `compare`, `significance` work on rows, and `write_rows`, `write_leaderboard`,
`figures` and `report` write the files of their commands; `reproduce` runs experiment files and
regenerates a results folder; `evaluate` scores a trained `torch.nn.Module` of your own.
Subclass `bench.Detector` (fit / score) or `bench.NetworkDetector` (a network and a training
loss) to benchmark a detector of your own; `bench.param` declares its config fields. Bad input
raises `bench.BenchError`. Names are imported on first use, so ``import bench`` stays quick.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "run": "bench.api", "read_rows": "bench.api", "leaderboard": "bench.api",
    "compare": "bench.api", "significance": "bench.api", "report": "bench.api",
    "write_rows": "bench.api", "write_leaderboard": "bench.api", "figures": "bench.api",
    "reproduce": "bench.api",
    "evaluate": "bench.external",
    "BenchError": "bench.errors", "Detector": "bench.methods.base",
    "NetworkDetector": "bench.methods.network", "NetworkConfig": "bench.methods.network",
    "ContrastiveConfig": "bench.methods.network", "LogitScoreConfig": "bench.methods.network",
    "FitContext": "bench.nn.context", "ImageSet": "bench.datasets", "DataSource": "bench.datasets",
    "param": "bench.config", "score_field": "bench.config", "Config": "bench.config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
