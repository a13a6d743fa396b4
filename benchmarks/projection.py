"""Projected time of a full paper-preset one-class CIFAR-10 run (10 classes), from FLOPs and throughput.

For each method at the paper preset, counts the FLOPs of one training step (forward + backward,
torch's FlopCounterMode), measures this device's training images/s for that step with the paper
backbone (PANDA and MSC: ResNet-152 at 224 pixels, random-init weights: the same FLOPs), and
projects the 10-class run: 10 x 5,000 images x epochs training steps (scoring is seconds, see
score_throughput.py). On CUDA the measured rate gives the projection directly; on
CPU it is printed too (days), next to what a GPU would need at a stated model FLOP utilisation
(`--gpu-tflops`, `--mfu`: an assumption, not a measurement, and labelled so).

The host side too: the operators one training step issues (torch.profiler; each a kernel
launch on CUDA), the host time they take at this machine's measured time per operator, and what
a checkpoint holds; then a table of the projected 10-class wall time on one GPU of `--gpu-tflops`
at 10-50% MFU with 1, 2 and 4 jobs per device (`--jobs-per-device`), each job's step taking the
longer of its share of the GPU's compute and its own host time:

    wall = ceil(10 / N) x steps per class x max(N x compute per step, host per step)

    python benchmarks/projection.py                 # CPU: ~2 minutes
    python benchmarks/projection.py --device cuda   # measured on the GPU
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(__file__))
from _common import checkpoint_cost, machine, sync, top_level_ops  # noqa: E402
from memory import detector  # noqa: E402

from bench.nn.devices import select_device  # noqa: E402

CLASSES = 10
IMAGES_PER_CLASS = 5000  # CIFAR-10 training images of one class


def step_flops(method: str, batch: int) -> float:
    """FLOPs of one training step (forward + backward) per image, counted on CPU."""
    det, _, x, y, _ = detector(method, torch.device("cpu"), batch)
    with FlopCounterMode(display=False) as counter:
        det.training_loss(x, y).backward()
    return counter.get_total_flops() / batch


def images_per_second(method: str, device: torch.device, batch: int, steps: int) -> float:
    det, _, x, y, opt = detector(method, device, batch)

    def step():
        opt.zero_grad(set_to_none=True)
        with det.ctx_.precision.autocast(device):
            loss = det.training_loss(x, y)
        loss.backward()
        opt.step()

    step()  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return batch * steps / (time.perf_counter() - t0)


def step_operators(method: str) -> int:
    """aten operators one training step issues (forward, loss, backward, optimiser), counted
    on the CPU at batch 2 (the count does not depend on the batch)."""
    det, _, x, y, opt = detector(method, torch.device("cpu"), 2)

    def step():
        opt.zero_grad(set_to_none=True)
        det.training_loss(x, y).backward()
        opt.step()

    step()  # optimiser state exists: the steady state
    return top_level_ops(step)


def seconds_per_operator(n: int = 20000) -> float:
    """This machine's host time per operator: a 1-element add dispatched n times."""
    a = torch.zeros(1)
    for _ in range(1000):
        a.add_(1)
    t0 = time.perf_counter()
    for _ in range(n):
        a.add_(1)
    return (time.perf_counter() - t0) / n


def checkpoint_of(method: str) -> tuple[float, float]:
    """(MiB, seconds) of one synchronous checkpoint of the paper network and its optimiser
    here (the engine now copies it in the step and writes it behind)."""
    det, _, x, y, opt = detector(method, torch.device("cpu"), 2)
    det.training_loss(x, y).backward()
    opt.step()
    cost = checkpoint_cost(det.model_, opt, torch.device("cpu"))
    return cost["checkpoint_mib"], cost["checkpoint_sync_s"]


def projected_hours(flops_per_image: float, batch: int, epochs: int, ops: int, op_s: float,
                    peak_tflops: float, mfu: float, jobs: int) -> float:
    """Wall hours of the 10 classes, N = `jobs` classes at once on one GPU (see the module)."""
    steps = epochs * math.ceil(IMAGES_PER_CLASS / batch)
    compute = flops_per_image * batch / (peak_tflops * 1e12 * mfu)
    host = ops * op_s
    return math.ceil(CLASSES / jobs) * steps * max(jobs * compute, host) / 3600


def days(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 3 * 86400 else f"{seconds / 86400:.0f} days"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="csi,mcl,panda,msc")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=None, help="images per timed step (CPU: 8)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--gpu-tflops", type=float, default=989.0,
                   help="dense bf16 peak of the GPU to project for (H100/H200 SXM: 989)")
    p.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOP utilisation")
    p.add_argument("--no-host", action="store_true", help="skip the host-side table")
    args = p.parse_args()
    device = select_device(args.device)
    gpu = device.type == "cuda"
    print(f"device: {machine()}")
    table = []
    op_s = seconds_per_operator()
    for method in args.methods.split(","):
        _, cfg, *_ = detector(method, torch.device("cpu"), 2)
        batch = args.batch or (cfg.batch_size if gpu else 8)
        flops = step_flops(method, 2)
        rate = images_per_second(method, device, batch, args.steps or (10 if gpu else 2))
        images = CLASSES * IMAGES_PER_CLASS * cfg.epochs
        total = flops * images
        network = getattr(cfg, "backbone", "") or cfg.arch  # pretrained methods: arch
        print(f"{method}: {network}, {cfg.epochs} epochs, {flops / 1e9:.1f} GFLOP per image "
              f"step; one class {total / CLASSES:.2e} FLOPs, 10 classes {total:.2e} FLOPs")
        print(f"  measured here: {rate:.1f} img/s at batch {batch} "
              f"({rate * flops / 1e12:.2f} TFLOP/s) -> 10 classes in {days(images / rate)}")
        if not gpu:
            assumed = args.gpu_tflops * 1e12 * args.mfu
            print(f"  assumed GPU ({args.gpu_tflops:.0f} TFLOP/s bf16 peak at {args.mfu:.0%} MFU, "
                  f"not measured): 10 classes in {days(total / assumed)}")
        if not args.no_host:
            ops = step_operators(method)
            mib, ckpt_s = checkpoint_of(method)
            table.append((method, network, flops, cfg.batch_size, cfg.epochs, ops, mib, ckpt_s))
    if table:
        print(f"\nhost side: {1e6 * op_s:.1f} us per operator measured here (a 1-element op; "
              "a CUDA launch adds its own)")
        print("| method | network | GFLOP per image step | batch | operators per step | host ms "
              "per step | checkpoint MiB (s here, synchronous) |")
        print("|---|---|---|---|---|---|---|")
        for method, network, flops, batch, _, ops, mib, ckpt_s in table:
            print(f"| {method} | {network} | {flops / 1e9:.1f} | {batch} | {ops} | "
                  f"{1e3 * ops * op_s:.1f} | {mib:.0f} ({ckpt_s:.2f}) |")
        mfus, jobs = (0.1, 0.2, 0.3, 0.5), (1, 2, 4)
        print(f"\nprojected hours, 10 one-class CIFAR-10 classes on one {args.gpu_tflops:.0f} "
              "TFLOP/s GPU (a projection: MFU assumed, host time from this machine)")
        print("| method | jobs per device | " + " | ".join(f"{m:.0%} MFU" for m in mfus) + " |")
        print("|---|---|" + "---|" * len(mfus))
        for method, _, flops, batch, epochs, ops, _, _ in table:
            for n in jobs:
                cells = [projected_hours(flops, batch, epochs, ops, op_s, args.gpu_tflops, m, n)
                         for m in mfus]
                print(f"| {method} | {n} | " + " | ".join(f"{h:.2f}" for h in cells) + " |")


if __name__ == "__main__":
    main()
