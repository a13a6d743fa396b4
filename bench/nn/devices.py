"""Which torch device a run or a job uses: ``--device`` checked against this machine, and
``auto`` resolved (CUDA when there is one, else the CPU)."""

from __future__ import annotations

import torch

from bench.errors import BenchError


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, then CPU; ``cuda:1`` etc. are passed through."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_device(device: str) -> str:
    """The device string if this machine has it; a BenchError naming what it has otherwise."""
    if device == "auto":
        return device
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise BenchError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cpu":
        return device
    if parsed.type != "cuda":
        raise BenchError(f"--device {device!r}: this suite runs on cpu or cuda")
    if not torch.cuda.is_available():
        raise BenchError(f"--device {device}: no CUDA device is visible on this machine "
                         "(torch.cuda.is_available() is False); use --device cpu")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise BenchError(f"--device {device}: this process sees {torch.cuda.device_count()} "
                         "GPU(s)")
    return device


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else the platform's."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(device: torch.device) -> str:
    """What a job ran on, for its record and the report: the GPU's name, or the CPU's model and
    the torch threads; and the torch version."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"{cpu_name()}, {torch.get_num_threads()} torch threads (torch {torch.__version__})"
