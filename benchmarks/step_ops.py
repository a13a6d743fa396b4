"""Operators per paper training step, by phase, as the engine runs the step: each operator is a
kernel launch on CUDA and 2-7 us of host time, so their count bounds how fast a GPU can be fed.

Counted with torch.profiler on the CPU (the counts do not depend on the batch size or the
device): the aten operators issued directly by the step, attributed to the phase that issued
them (augmentation, forward, loss, backward, optimizer). Two code paths in one run:

    before: LARS looping over its tensors in Python (torchlars' rule), SGD as torch's
            per-tensor loop, and the crop sampler drawing its 10 retries one round at a time
            (as the engine had them);
    now:    LARS and SGD as multi-tensor (foreach) operations, every crop retry drawn at once.

The CPU time of one step is measured for both (fastest of --rounds, alternating), and their
ratio printed. Targets (issue: a step not bound by the host): CSI at most 600 operators, its
optimizer under 50.

    python benchmarks/step_ops.py [--methods csi,mcl,simclr,rotnet,panda,msc] [--batch 8]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402

import bench.nn.augment as augment  # noqa: E402
from bench.config import build_method_config, load_preset  # noqa: E402
from bench.datasets import ImageSet  # noqa: E402
from bench.nn.context import FitContext  # noqa: E402
from bench.nn.optim import LARS  # noqa: E402
from bench.nn.precision import FP32  # noqa: E402
from bench.nn.train import prepare_model  # noqa: E402
from bench.registry import METHODS  # noqa: E402

PHASES = ("augmentation", "forward", "loss", "backward", "optimizer")


def crop_boxes_one_round_at_a_time(n, scale, ratio, size, device="cpu", tries=10):
    """The crop sampler as it was: one round of draws per retry (continuous sizes); kept here
    only to count its operators beside today's."""
    box = torch.ones(n, 2, device=device)
    todo = torch.ones(n, dtype=torch.bool, device=device)
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(tries):
        area = torch.empty(n, device=device).uniform_(*scale)
        r = torch.exp(torch.empty(n, device=device).uniform_(*log_r))
        w, h = torch.sqrt(area * r), torch.sqrt(area / r)
        fits = todo & (w <= 1) & (h <= 1)
        box = torch.where(fits.unsqueeze(1), torch.stack([w, h], 1), box)
        todo = todo & ~fits
    left = torch.rand(n, device=device) * (1 - box[:, 0])
    top = torch.rand(n, device=device) * (1 - box[:, 1])
    return torch.cat([torch.stack([left, top], 1), box], 1)


@contextlib.contextmanager
def crop_sampler(path: str):
    """The crop sampler of `path`: before, one round of draws per retry; now, today's."""
    today = augment.sample_crop_boxes
    if path == "before":
        augment.sample_crop_boxes = crop_boxes_one_round_at_a_time
    try:
        yield
    finally:
        augment.sample_crop_boxes = today


@contextlib.contextmanager
def phases_labelled(detector):
    """Label the augmentation and the forward pass while the step runs (the loss is what the
    method's training_loss does besides them)."""
    view_call, forward = augment.ViewAugment.__call__, type(detector.model_).forward

    def labelled_view(self, x):
        with record_function("phase:augmentation"):
            return view_call(self, x)

    def labelled_forward(self, *args, **kwargs):
        with record_function("phase:forward"):
            return forward(self, *args, **kwargs)

    augment.ViewAugment.__call__ = labelled_view
    type(detector.model_).forward = labelled_forward
    try:
        yield
    finally:
        augment.ViewAugment.__call__ = view_call
        type(detector.model_).forward = forward


def count_by_phase(step) -> Counter:
    """Top-level aten operators of one call of `step`, by the phase that issued them."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    counts: Counter = Counter()
    for e in prof.events():
        if not e.name.startswith("aten::"):
            continue
        parent, phase = e.cpu_parent, None
        nested = False
        while parent is not None:
            if parent.name.startswith("aten::"):
                nested = True
                break
            if parent.name.startswith("phase:"):
                phase = phase or parent.name[6:]
            parent = parent.cpu_parent
        if not nested:
            counts[phase or "loss"] += 1
    return counts


def detector_for(method: str, batch: int, size: int):
    cls = METHODS.load_object(method)
    config = build_method_config(method, cls.Config, load_preset("paper"), [])
    if method in ("panda", "msc"):  # random init: the operators are the same as with weights
        import dataclasses

        config = dataclasses.replace(config, weights="none")
    det = cls(config)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    data = ImageSet(images, torch.zeros(batch, dtype=torch.int64), ("normal",), "bench")
    det.ctx_, det.n_classes_ = FitContext(progress=False, precision=FP32), 1
    det.model_ = prepare_model(det.build_model(data), torch.device("cpu"), FP32)
    det.model_.train()
    if hasattr(det, "before_training"):
        det.before_training(images)
    return det, images


def make_step(det, images, foreach: bool):
    opt = det.optimizer()
    params = [p for g in opt.param_groups for p in g["params"]]
    d = opt.defaults
    if isinstance(opt, LARS):
        opt = LARS(params, lr=d["lr"], momentum=d["momentum"], weight_decay=d["weight_decay"],
                   foreach=foreach)
    elif isinstance(opt, torch.optim.SGD):  # before: torch's per-tensor loop on the CPU
        opt = torch.optim.SGD(params, lr=d["lr"], momentum=d["momentum"],
                              weight_decay=d["weight_decay"], nesterov=d["nesterov"],
                              foreach=foreach)
    labels = torch.zeros(images.shape[0], dtype=torch.int64)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = det.training_loss(images, labels)
        with record_function("phase:backward"):
            loss.backward()
        with record_function("phase:optimizer"):
            opt.step()
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="csi,mcl,simclr,rotnet,panda,msc")
    p.add_argument("--batch", type=int, default=8, help="images per step (counts do not "
                                                         "depend on it)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"machine: {machine()}; paper preset, batch {args.batch}, fp32, CPU")
    print(f"{'method':<8}{'path':<8}" + "".join(f"{ph:>14}" for ph in PHASES)
          + f"{'total':>8}{'ms/step':>10}")
    for method in args.methods.split(","):
        det, images = detector_for(method, args.batch, 32)  # PANDA and MSC resize to 224
        paths = {"before": False, "now": True}
        steps = {name: make_step(det, images, foreach) for name, foreach in paths.items()}
        counts = {}
        with phases_labelled(det):
            for name, step in steps.items():
                with crop_sampler(name):
                    step()  # optimizer state exists: the steady state
                    counts[name] = count_by_phase(step)
        seconds = dict.fromkeys(steps, float("inf"))
        for _ in range(args.rounds):
            for name, step in steps.items():
                with crop_sampler(name):
                    t0 = time.perf_counter()
                    step()
                    seconds[name] = min(seconds[name], time.perf_counter() - t0)
        for name in steps:
            c = counts[name]
            print(f"{method:<8}{name:<8}" + "".join(f"{c[ph]:>14}" for ph in PHASES)
                  + f"{sum(c.values()):>8}{1e3 * seconds[name]:>10.1f}")
        print(f"{method:<8}CPU time now / before: {seconds['now'] / seconds['before']:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
