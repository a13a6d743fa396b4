"""Images/s of one training step per method, side by side in one run: the engine under the
precision policy (`auto`), the engine forced to fp32, MCL's per-image PIL pipeline, and the
ceiling of the network alone.

(a) engine auto: uint8 data on the device, batches by index, batched per-sample augmentation,
    the precision `--precision auto` chooses here (bf16 + channels_last where the CPU has bf16);
(b) engine fp32: the same, fp32 in the default layout (the engine before the policy);
(c) reference, MCL's pipeline: per-image torchvision transforms on PIL images in a DataLoader,
    as MCL's official code feeds its model, then the same loss at fp32 (CSI's official code
    augments batches in tensor layers on the device, as the engine does: its speed is the
    engine's at fp32, (b));
(d) ceiling: forward, loss and backward of the same network on ready tensors, the fastest of
    {fp32, bf16} x {NCHW, channels_last}.

Every variant runs `--rounds` rounds of `--steps` timed steps and its fastest round counts
(noisy machines), the reference too. The last lines are `speedup_vs_fp32: a/b`,
`speedup_vs_reference: a/c`, `fraction_of_ceiling: a/d` (means over the methods measured;
per-method figures above them).

    python benchmarks/train_throughput.py                          # quick preset, 1 x 28 x 28
    python benchmarks/train_throughput.py --methods mcl,csi --size 32 --channels 3
    python benchmarks/train_throughput.py --device cuda --preset paper
    python benchmarks/train_throughput.py --compile                # the engine compiled too
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, timed  # noqa: E402

from bench.config import build_method_config, load_preset  # noqa: E402
from bench.datasets import ImageSet  # noqa: E402
from bench.nn.context import FitContext  # noqa: E402
from bench.nn.devices import select_device  # noqa: E402
from bench.nn.losses import masked_contrastive_loss, nt_xent, stochastic_positive_attraction_loss  # noqa: E402
from bench.nn.precision import FP32, Precision, resolve  # noqa: E402
from bench.nn.shifts import N_SHIFTS  # noqa: E402
from bench.nn.train import as_input, prepare_model  # noqa: E402
from bench.registry import METHODS  # noqa: E402

VIEWS = {"csi": (2, N_SHIFTS), "mcl": (2, N_SHIFTS), "simclr": (2, 1), "rotnet": (1, N_SHIFTS)}


class ReferenceViews(torch.utils.data.Dataset):
    """Per-image PIL pipeline: `copies` views x `rotations` rotations of each image."""

    def __init__(self, images: np.ndarray, size: int, copies: int, rotations: int):
        self.images, self.copies, self.rotations = images, copies, rotations
        colour = [transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                  transforms.RandomGrayscale(p=0.2)] if images.shape[-1] == 3 else []
        self.view = transforms.Compose([transforms.RandomResizedCrop(size), *colour,
                                        transforms.ToTensor()])
        self.flip = transforms.RandomHorizontalFlip()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = self.images[i]
        img = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        views = []
        for _ in range(self.copies):
            flipped = self.flip(img)
            views += [self.view(flipped.rotate(90 * k)) for k in range(self.rotations)]
        return torch.stack(views)  # [copies x rotations, C, H, W]


def method_loss(method: str, det, views: torch.Tensor, b: int, cfg) -> torch.Tensor:
    """The method's loss on ready views laid out as its engine builds them: copy-major, then
    rotation-major, then image ([copies, rotations, b] flattened)."""
    out = det.model_(views)
    shift = torch.arange(N_SHIFTS, device=views.device).repeat_interleave(b)
    if method == "rotnet":
        return F.cross_entropy(out["shift_logits"].float(), shift)
    z1, z2 = out["z"].chunk(2)
    if method == "simclr":
        return nt_xent(z1, z2, temperature=cfg.temperature)
    if method == "csi":
        return nt_xent(z1, z2, temperature=cfg.temperature) + F.cross_entropy(
            out["shift_logits"].float(), torch.cat([shift, shift]))
    weights = dict(temperature=cfg.temperature, alpha=cfg.alpha, beta=cfg.beta,
                   clamp_negative=cfg.clamp_negative)
    labels = (z1, z2, shift, torch.zeros_like(shift))
    return (masked_contrastive_loss(*labels, **weights)
            + stochastic_positive_attraction_loss(*labels, **weights))


def _detector(method: str, cfg, data: ImageSet, device, precision: Precision, compile_: bool):
    det = METHODS.load_object(method)(cfg)
    det.ctx_, det.n_classes_ = FitContext(device=device, precision=precision), 1
    det.model_ = prepare_model(det.build_model(data), device, precision)
    if compile_:
        det.model_.compile()
    return det


def measure(method: str, args, device: torch.device) -> dict[str, float]:
    cls = METHODS.load_object(method)
    cfg = build_method_config(method, cls.Config, load_preset(args.preset), [])
    b = cfg.batch_size
    copies, rotations = VIEWS[method]
    n = max(b * ((args.steps + 2) * args.rounds + 4), 512)  # 2 warm-up steps per round
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, args.size, args.size, args.channels), dtype=np.uint8)
    data = ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                    torch.zeros(n, dtype=torch.int64), ("normal",), "bench")
    on_device, labels = data.images.to(device), data.labels.to(device)
    auto = resolve("auto", device)

    def train_step(det, precision, loss_fn):
        opt = det.opt_
        opt.zero_grad(set_to_none=True)
        with precision.autocast(device):
            loss = loss_fn()
        loss.backward()
        opt.step()

    def engine(precision: Precision, compile_: bool = False):
        det = _detector(method, cfg, data, device, precision, compile_)
        det.opt_ = torch.optim.SGD(det.model_.parameters(), lr=1e-3, momentum=0.9)
        cursor = {"i": 0}

        def step():
            i = cursor["i"] = (cursor["i"] + b) % (n - b)
            idx = torch.arange(i, i + b, device=device)
            train_step(det, precision, lambda: det.training_loss(on_device[idx], labels[idx]))
        return step

    def ceiling(precision: Precision):
        det = _detector(method, cfg, data, device, precision, False)
        det.opt_ = torch.optim.SGD(det.model_.parameters(), lr=1e-3, momentum=0.9)
        ready = torch.rand(copies * rotations * b, args.channels, args.size, args.size,
                           device=device)
        ready = as_input(ready, precision)
        return lambda: train_step(det, precision, lambda: method_loss(method, det, ready, b, cfg))

    variants = {"engine_auto": engine(auto, args.compile), "engine_fp32": engine(FP32)}
    for name, prec in (("fp32", FP32), ("fp32_cl", Precision("fp32", True)),
                       ("bf16", Precision("bf16", False)), ("bf16_cl", Precision("bf16", True))):
        variants[f"ceiling_{name}"] = ceiling(prec)
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(args.rounds):
        for name, step in variants.items():
            best[name] = min(best[name], timed(step, device, args.steps))

    # (c) reference-style DataLoader of PIL transforms, measured last: its workers compete for
    # the CPU with the model step, as they do in the reference code
    ref = _detector(method, cfg, data, device, FP32, False)
    ref.opt_ = torch.optim.SGD(ref.model_.parameters(), lr=1e-3, momentum=0.9)
    loader = torch.utils.data.DataLoader(
        ReferenceViews(images, args.size, copies, rotations), batch_size=b, shuffle=True,
        num_workers=args.workers, drop_last=True, pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0)
    batches = iter(loader)

    def reference_step():
        x = next(batches).to(device, non_blocking=True)  # [b, copies x rotations, C, H, W]
        views = x.view(b, copies, rotations, *x.shape[2:]).permute(1, 2, 0, 3, 4, 5)
        views = views.reshape(-1, *x.shape[2:])
        train_step(ref, FP32, lambda: method_loss(method, ref, views, b, cfg))

    best["reference"] = min(timed(reference_step, device, args.steps)
                            for _ in range(args.rounds))  # the same statistic as the others
    rates = {k: b / v for k, v in best.items()}
    ceiling_name = max((k for k in rates if k.startswith("ceiling_")), key=rates.get)
    rates["ceiling"] = rates[ceiling_name]
    peak = (f", peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
            if device.type == "cuda" else "")
    print(f"{method}: engine auto ({auto.name}{', channels_last' if auto.channels_last else ''}) "
          f"{rates['engine_auto']:.0f} img/s, engine fp32 {rates['engine_fp32']:.0f}, MCL's PIL "
          f"pipeline {rates['reference']:.0f}, ceiling {rates['ceiling']:.0f} ({ceiling_name[8:]}; "
          + ", ".join(f"{k[8:]} {rates[k]:.0f}" for k in rates if k.startswith("ceiling_"))
          + f") [{copies * rotations} views per image]{peak}", flush=True)
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="csi,mcl,simclr,rotnet")
    p.add_argument("--preset", default="quick", help="the methods' configs (backbone, batch)")
    p.add_argument("--size", type=int, default=28, help="image side in pixels")
    p.add_argument("--channels", type=int, default=1, help="1 (Fashion-MNIST) or 3 (CIFAR)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the engine (auto)")
    args = p.parse_args()
    device = select_device(args.device)
    args.steps = args.steps or (20 if device.type == "cuda" else 8)
    torch.manual_seed(0)
    print(f"device: {machine()}; preset {args.preset}, {args.channels} x {args.size} x "
          f"{args.size}, {args.rounds} rounds of {args.steps} timed steps"
          f"{', engine compiled' if args.compile else ''}, {args.workers} DataLoader workers")
    results = {m: measure(m, args, device) for m in args.methods.split(",")}
    for m, r in results.items():
        print(f"{m}: speedup_vs_fp32 {r['engine_auto'] / r['engine_fp32']:.2f}, "
              f"speedup_vs_reference {r['engine_auto'] / r['reference']:.2f}, "
              f"fraction_of_ceiling {r['engine_auto'] / r['ceiling']:.2f}")
    for key, den in (("speedup_vs_fp32", "engine_fp32"), ("speedup_vs_reference", "reference"),
                     ("fraction_of_ceiling", "ceiling")):
        print(f"{key}: {np.mean([r['engine_auto'] / r[den] for r in results.values()]):.2f}")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
