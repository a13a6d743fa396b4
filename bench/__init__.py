"""mcl-bench: self-supervised anomaly and OOD detection benchmarks (MCL, CSI, SimCLR, Rot, PyOD)."""

__version__ = "0.1.0"
