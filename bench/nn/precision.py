"""The precision and memory-layout policy: one place decides how networks run on a device.

``--precision auto`` picks bf16 autocast with channels_last where the hardware computes bf16
matrix products natively (CUDA GPUs from Ampere on; CPUs with AVX512-BF16 or AMX), fp16 with a
gradient scaler on older GPUs, and fp32 in the default layout elsewhere. Only the network runs in
reduced precision: losses, softmax and normalisation, Gaussians, Mahalanobis distances and the crop
grid of the augmentation run in fp32 with autocast switched off (`fp32_region`).
"""

from __future__ import annotations

import contextlib
import functools
import platform
from dataclasses import dataclass

import torch

CHOICES = ("auto", "fp32", "bf16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 matmul


@dataclass(frozen=True)
class Precision:
    """How a network runs: its autocast dtype (None: fp32) and whether inputs are channels_last."""

    name: str  # fp32, bf16 or fp16
    channels_last: bool
    reason: str = ""

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self, device: torch.device):
        """Autocast to the policy's dtype on `device` (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def needs_grad_scaler(self) -> bool:
        return self.name == "fp16"

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        return f"{self.name}, {layout}" + (f" ({self.reason})" if self.reason else "")


FP32 = Precision("fp32", channels_last=False)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in CPU_BF16_FLAGS)


def resolve(requested: str, device: torch.device, *, cpu_bf16: bool | None = None,
            cuda_bf16: bool | None = None) -> Precision:
    """The policy for `requested` (auto, fp32 or bf16) on `device`; the hardware probes can be
    given (tests) instead of read from the machine."""
    if requested not in CHOICES:
        from bench.errors import unknown_name

        raise unknown_name("precision", requested, CHOICES)
    if requested == "fp32":
        return Precision("fp32", channels_last=False, reason="requested")
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        if supported:
            return Precision("bf16", channels_last=True,
                             reason="requested" if requested == "bf16" else "CUDA with bf16")
        return Precision("fp16", channels_last=True,
                         reason="this GPU has no bf16: fp16 with a gradient scaler")
    if device.type == "cpu":
        native = cpu_has_bf16() if cpu_bf16 is None else cpu_bf16
        if requested == "bf16":
            return Precision("bf16", channels_last=True,
                             reason="requested" + ("" if native else "; no native bf16 on "
                                                   "this CPU, expect it to be slow"))
        if native:
            return Precision("bf16", channels_last=True, reason="CPU with native bf16 "
                             f"({', '.join(f for f in CPU_BF16_FLAGS if f in cpu_flags())})"
                             if cpu_bf16 is None else "CPU with native bf16")
        return Precision("fp32", channels_last=False,
                         reason=f"no native bf16 on this CPU ({platform.machine()})")
    return Precision("fp32", channels_last=False, reason=f"{device.type} device")


def fp32_region(x: torch.Tensor):
    """Autocast switched off on x's device: what runs inside stays in fp32."""
    return torch.autocast(x.device.type, enabled=False)
