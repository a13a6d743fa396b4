"""Peak memory of one paper-preset training step, measured where a GPU is available and
projected from saved-for-backward tensors everywhere else.

On CUDA: torch.cuda.max_memory_allocated over one full step at the preset's batch. On CPU (no GPU
to measure): the bytes of every tensor autograd saves for backward in one step at a small batch
(hooked with torch.autograd.graph.saved_tensors_hooks, in fp32 and under bf16 autocast), scaled
linearly to the preset's batch, plus parameters, gradients and optimiser state. Activation memory
is linear in the batch, so the projection is exact up to allocator overhead and transient buffers.

    python benchmarks/memory.py                 # CPU projection for csi, mcl, simclr, rotnet
    python benchmarks/memory.py --device cuda   # measured on the GPU
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402

from bench.config import build_method_config, load_preset  # noqa: E402
from bench.datasets import ImageSet  # noqa: E402
from bench.nn.context import FitContext  # noqa: E402
from bench.nn.devices import select_device  # noqa: E402
from bench.nn.optim import make_optimizer  # noqa: E402
from bench.nn.precision import resolve  # noqa: E402
from bench.nn.train import prepare_model  # noqa: E402
from bench.registry import METHODS  # noqa: E402

GIB = 2**30


def detector(method: str, device, batch: int | None = None):
    """A paper-preset detector with its network on `device` (ImageNet-pretrained methods:
    random-init weights, the same FLOPs), a CIFAR-shaped batch and the optimiser."""
    cls = METHODS.load_object(method)
    cfg = build_method_config(method, cls.Config, load_preset("paper"), [])
    if cls.kind == "pretrained":
        cfg = dataclasses.replace(cfg, weights="none")  # nothing to download
    n = batch or cfg.batch_size
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    data = ImageSet(images, torch.zeros(n, dtype=torch.int64), ("normal",), "cifar-shaped")
    det = cls(cfg)
    precision = resolve("auto", device)
    det.ctx_, det.n_classes_ = FitContext(device=device, precision=precision), 1
    det.model_ = prepare_model(det.build_model(data), device, precision)
    if cls.kind == "pretrained":
        with torch.no_grad():
            det.model_.center = det.initial_center(images[:2]).float()
        opt = det.optimizer()
    else:
        opt = make_optimizer(det.model_.parameters(), cfg)
    return det, cfg, data.images.to(device), data.labels.to(device), opt


def saved_bytes(method: str, batch: int, bf16: bool) -> int:
    det, cfg, x, y, _ = detector(method, torch.device("cpu"), batch)
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        det.training_loss(x, y)
    return total


def state_bytes(method: str) -> int:
    """Parameters + gradients + one optimiser buffer (momentum) per parameter, fp32."""
    det, *_ = detector(method, torch.device("cpu"), 2)
    return 3 * sum(p.numel() * p.element_size() for p in det.model_.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="csi,mcl,simclr,rotnet")
    p.add_argument("--probe-batch", type=int, default=4, help="images per probe step (CPU)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = select_device(args.device)
    print(f"device: {machine()}")
    for method in args.methods.split(","):
        cls = METHODS.load_object(method)
        cfg = build_method_config(method, cls.Config, load_preset("paper"), [])
        if device.type == "cuda":
            det, cfg, x, y, opt = detector(method, device)
            torch.cuda.reset_peak_memory_stats(device)
            with det.ctx_.precision.autocast(device):
                loss = det.training_loss(x, y)
            loss.backward()
            opt.step()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) / GIB
            print(f"{method}: paper preset ({cfg.backbone}, batch {cfg.batch_size} images), "
                  f"measured peak {peak:.2f} GiB ({det.ctx_.precision.describe()})")
            continue
        scale = cfg.batch_size / args.probe_batch
        fp32 = saved_bytes(method, args.probe_batch, False) * scale
        bf16 = saved_bytes(method, args.probe_batch, True) * scale
        state = state_bytes(method)
        print(f"{method}: paper preset ({cfg.backbone}, batch {cfg.batch_size} images): "
              f"activations {fp32 / GIB:.2f} GiB fp32 / {bf16 / GIB:.2f} GiB bf16 autocast; "
              f"weights+grads+momentum {state / GIB:.2f} GiB; projected peak "
              f"{(bf16 + state) / GIB:.2f} GiB (bf16), {(fp32 + state) / GIB:.2f} GiB (fp32)",
              flush=True)


if __name__ == "__main__":
    main()
