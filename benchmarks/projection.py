"""Projected time of a full paper-preset one-class CIFAR-10 run (10 classes), from FLOPs and throughput.

For each method at the paper preset, counts the FLOPs of one training step (forward + backward,
torch's FlopCounterMode), measures this device's training images/s for that step with the paper
backbone (PANDA and MSC: ResNet-152 at 224 pixels, random-init weights: the same FLOPs), and
projects the 10-class run: 10 x 5,000 images x epochs training steps (scoring is seconds, see
score_throughput.py). On CUDA the measured rate gives the projection directly; on
CPU it is printed too (days), next to what a GPU would need at a stated model FLOP utilisation
(`--gpu-tflops`, `--mfu`: an assumption, not a measurement, and labelled so).

    python benchmarks/projection.py                 # CPU: ~2 minutes
    python benchmarks/projection.py --device cuda   # measured on the GPU
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, sync  # noqa: E402
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
    args = p.parse_args()
    device = select_device(args.device)
    gpu = device.type == "cuda"
    print(f"device: {machine()}")
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


if __name__ == "__main__":
    main()
