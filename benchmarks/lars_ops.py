"""LARS over CSI's paper network: operators per optimiser step (each a kernel launch on CUDA)
and CPU time, the per-tensor loop (torchlars' rule) against the multi-tensor (foreach) step, in
one run. The two leave bit-identical weights (tests/test_train.py).

    python benchmarks/lars_ops.py [--steps 20] [--rounds 5] [--backbone resnet18]

Times are the fastest round of each, the two alternating (this machine is noisy).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from bench.nn.backbones import Network
from bench.nn.optim import LARS

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, top_level_ops  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backbone", default="resnet18")
    args = parser.parse_args()
    torch.manual_seed(0)
    net = Network(args.backbone, 3, proj_hidden=512, proj_dim=128, n_shifts=4)  # CSI's heads
    out = net(torch.rand(4, 3, 32, 32))
    (out["z"].square().mean() + out["shift_logits"].mean()).backward()
    print(f"machine: {machine()}; {args.backbone} with CSI's heads, "
          f"{len(list(net.parameters()))} parameter tensors")
    opts = {name: LARS(net.parameters(), lr=0.1, weight_decay=1e-6, foreach=foreach)
            for name, foreach in (("loop", False), ("foreach", True))}
    ops = {}
    for name, opt in opts.items():
        opt.step()  # momentum buffers exist: the steady state
        ops[name] = top_level_ops(opt.step)
    seconds = {name: float("inf") for name in opts}
    for _ in range(args.rounds):
        for name, opt in opts.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                opt.step()
            seconds[name] = min(seconds[name], (time.perf_counter() - t0) / args.steps)
    for name in opts:
        print(f"{name:<8} {ops[name]:>5} operators per step   "
              f"{1e3 * seconds[name]:7.2f} ms per step (fastest of {args.rounds} rounds)")
    print(f"foreach / loop CPU time: {seconds['foreach'] / seconds['loop']:.2f}")


if __name__ == "__main__":
    main()
