"""Images/s of one training step of CSI and MCL: our engine vs a reference-style pipeline vs the
model alone.

(a) engine: uint8 data on the device, batches by index, batched per-sample augmentation;
(b) reference-style: per-image torchvision transforms on PIL images in a DataLoader, as the
    official MCL code feeds its model, then the same model step;
(c) ceiling: forward, loss and backward of the same model on ready tensors (no augmentation).

All three in one run on one device; the last lines are `speedup_vs_reference: a/b` and
`fraction_of_ceiling: a/c` (the mean over the methods measured).

    python benchmarks/train_throughput.py                       # CPU defaults, a few minutes
    python benchmarks/train_throughput.py --device cuda           # GPU: resnet18, batch 128
    python benchmarks/train_throughput.py --compile               # the same under torch.compile
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, timed  # noqa: E402

from bench.datasets import ImageSet  # noqa: E402
from bench.methods.base import FitContext  # noqa: E402
from bench.nn.losses import masked_contrastive_loss, nt_xent, stochastic_positive_attraction_loss  # noqa: E402
from bench.nn.shifts import N_SHIFTS  # noqa: E402
from bench.nn.train import as_input, autocast, prepare_model, select_device  # noqa: E402
from bench.registry import METHODS  # noqa: E402


class ReferenceViews(torch.utils.data.Dataset):
    """Per-image PIL pipeline: 2 views x 4 rotations of each image (flip, rotate, crop, jitter)."""

    def __init__(self, images: np.ndarray, size: int):
        self.images = images
        self.view = transforms.Compose([
            transforms.RandomResizedCrop(size),
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
            transforms.ToTensor(),
        ])
        self.flip = transforms.RandomHorizontalFlip()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = Image.fromarray(self.images[i])
        views = []
        for _ in range(2):
            flipped = self.flip(img)
            views += [self.view(flipped.rotate(90 * k)) for k in range(N_SHIFTS)]
        return torch.stack(views)  # [2 x 4, C, H, W]: view-major, rotation-minor


def reference_loss(method: str, det, x: torch.Tensor, cfg) -> torch.Tensor:
    """The same losses as the engine, on the reference pipeline's views."""
    b = x.shape[0]
    views = x.view(b, 2, N_SHIFTS, *x.shape[2:]).permute(1, 2, 0, 3, 4, 5).reshape(-1, *x.shape[2:])
    out = det.model_(as_input(views))
    z1, z2 = out["z"].chunk(2)
    shift = torch.arange(N_SHIFTS, device=x.device).repeat_interleave(b)
    if method == "csi":
        return nt_xent(z1, z2, cfg.temperature) + F.cross_entropy(
            out["shift_logits"].float(), torch.cat([shift, shift]))
    classes = torch.zeros_like(shift)
    args = (z1, z2, classes, shift, cfg.temperature, cfg.alpha, cfg.beta, cfg.clamp_negative)
    return masked_contrastive_loss(*args) + stochastic_positive_attraction_loss(*args)


def measure(method: str, args, device: torch.device) -> dict[str, float]:
    cls = METHODS.load_object(method)
    cfg = cls.Config(backbone=args.backbone, batch_size=args.batch)
    n = max(args.batch * (args.steps * args.rounds + 4), 256)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, args.size, args.size, 3), dtype=np.uint8)
    data = ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                    torch.zeros(n, dtype=torch.int64), ("normal",), "bench")
    det = cls(cfg)
    det.ctx_, det.n_classes_ = FitContext(device=device), 1
    det.model_ = prepare_model(det.build_model(data), device)
    if args.compile:
        det.model_.compile()  # as `bench run --compile`; the warm-up steps pay the compile
    opt = torch.optim.SGD(det.model_.parameters(), lr=1e-3, momentum=0.9)
    on_device = data.images.to(device)
    labels = data.labels.to(device)

    def step(loss_fn):
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            loss = loss_fn()
        loss.backward()
        opt.step()

    # (a) engine: index the device tensor, the method's own training_loss
    cursor = {"i": 0}

    def engine_step():
        i = cursor["i"] = (cursor["i"] + args.batch) % (n - args.batch)
        idx = torch.arange(i, i + args.batch, device=device)
        step(lambda: det.training_loss(on_device[idx], labels[idx]))

    # (c) ceiling: ready tensors of the same shape, no augmentation
    ready = torch.rand(args.batch, 2 * N_SHIFTS, 3, args.size, args.size, device=device)

    def ceiling_step():
        step(lambda: reference_loss(method, det, ready, cfg))

    # engine and ceiling alternate over rounds; the fastest round of each counts (noisy machines)
    engine_s, ceiling_s = float("inf"), float("inf")
    for _ in range(args.rounds):
        engine_s = min(engine_s, timed(engine_step, device, args.steps))
        ceiling_s = min(ceiling_s, timed(ceiling_step, device, args.steps))

    # (b) reference-style DataLoader of PIL transforms, measured last: its workers compete for
    # the CPU with the model step, as they do in the reference code
    loader = torch.utils.data.DataLoader(ReferenceViews(images, args.size), batch_size=args.batch,
                                         shuffle=True, num_workers=args.workers, drop_last=True,
                                         pin_memory=device.type == "cuda", persistent_workers=True)
    batches = iter(loader)

    def reference_step():
        x = next(batches).to(device, non_blocking=True)
        step(lambda: reference_loss(method, det, x, cfg))

    reference_s = timed(reference_step, device, args.steps * args.rounds)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    rates = {k: args.batch / v for k, v in
             (("engine", engine_s), ("reference", reference_s), ("ceiling", ceiling_s))}
    print(f"{method}: engine {rates['engine']:.0f} img/s, reference {rates['reference']:.0f} "
          f"img/s, ceiling {rates['ceiling']:.0f} img/s"
          + (f", peak memory {peak:.2f} GiB" if device.type == "cuda" else "")
          + f" ({2 * N_SHIFTS} views per image)", flush=True)
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="csi,mcl")
    p.add_argument("--backbone", default=None, help="default: resnet18 on CUDA, resnet-small on CPU")
    p.add_argument("--batch", type=int, default=None, help="images per step (x 8 views)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (CIFAR: 32)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating engine/ceiling rounds")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (all three)")
    args = p.parse_args()
    device = select_device(args.device)
    gpu = device.type == "cuda"
    args.backbone = args.backbone or ("resnet18" if gpu else "resnet-small")
    args.batch = args.batch or (128 if gpu else 32)
    args.steps = args.steps or (20 if gpu else 6)
    torch.manual_seed(0)
    print(f"device: {machine()}; backbone {args.backbone}, batch {args.batch} images x 8 views, "
          f"{args.size}px, {args.rounds} rounds of {args.steps} timed steps"
          f"{', torch.compile' if args.compile else ''}, {args.workers} DataLoader workers")
    results = [measure(m, args, device) for m in args.methods.split(",")]
    speedup = np.mean([r["engine"] / r["reference"] for r in results])
    fraction = np.mean([r["engine"] / r["ceiling"] for r in results])
    print(f"speedup_vs_reference: {speedup:.2f}")
    print(f"fraction_of_ceiling: {fraction:.2f}")


if __name__ == "__main__":
    main()
