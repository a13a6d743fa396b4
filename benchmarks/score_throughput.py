"""Time to score a one-class CIFAR-sized task: batched matrix scoring vs a per-sample Python loop.

5,000 training images in the bank, 10,000 test images, 128-d projections. CSI-ens with T = 10
augmented samples x 4 rotations (CSI's `get_scores` loops over test samples); MCL's 8-way SEI
(the official `SEI_single` loops over samples, views and Gaussians with NumPy). Features are random
(the scoring cost does not depend on their values); both implementations get the same features,
their scores must agree, and the last line is `speedup_vs_loop: <ratio>` (total loop time / total
batched time).

    python benchmarks/score_throughput.py               # CPU, a few minutes
    python benchmarks/score_throughput.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, sync  # noqa: E402

from bench.nn.devices import select_device  # noqa: E402
from bench.nn.scoring import csi_scores, fit_gaussians, mahalanobis, sei_combine  # noqa: E402

K = 4  # rotations


def csi_batched(test_z, test_s, train_z, train_s):
    """test_z [N, T, K, d] -> means over T, then bench.nn.scoring.csi_scores."""
    tz = test_z.mean(1).permute(1, 0, 2)
    ts = test_s.mean(1).permute(1, 0, 2)
    full, _ = csi_scores(tz, ts, train_z.mean(1).permute(1, 0, 2), train_s.mean(1).permute(1, 0, 2))
    return full


def csi_loop(test_z, test_s, train_z, train_s):
    """CSI's get_scores: per test sample, per shift, with the training axes precomputed."""
    f_sim = [train_z[:, :, k].mean(1) for k in range(K)]
    f_shi = [train_s[:, :, k].mean(1) for k in range(K)]
    axis = [F.normalize(f, dim=1) for f in f_sim]
    w_sim = [1 / f_sim[k].norm(dim=1).mean().item() for k in range(K)]
    w_shi = [1 / f_shi[k][:, k].mean().item() for k in range(K)]
    scores = []
    for i in range(test_z.shape[0]):
        zs, ss = test_z[i], test_s[i]  # [T, K, d], [T, K, K]
        score = 0.0
        for k in range(K):
            z = zs[:, k].mean(0, keepdim=True)
            s = ss[:, k].mean(0, keepdim=True)
            score += (z * axis[k]).sum(dim=1).max().item() * w_sim[k]
            score += s[:, k].item() * w_shi[k]
        scores.append(score / K)
    return torch.tensor(scores)


def sei_batched(test_views, means, whiteners, rots):
    dist = torch.stack([mahalanobis(test_views[:, v], means[[r]], whiteners[[r]])
                        for v, r in enumerate(rots)], 1)
    return sei_combine(dist, "wa")[0]


def numpy_gaussians(z_train, labels, n_labels, ridge):
    """Means and precisions as the official code fits them: numpy.cov, then an inverse."""
    z, y = z_train.double().cpu().numpy(), labels.cpu().numpy()
    mu, inv = [], []
    for label in range(n_labels):
        x = z[y == label]
        cov = np.cov(x, rowvar=False)
        mu.append(x.mean(0))
        inv.append(np.linalg.inv(cov + ridge * np.mean(np.diag(cov)) * np.eye(cov.shape[0])))
    return np.stack(mu), np.stack(inv)


def sei_loop(test_views, mu, inv, rots):
    """The official SEI_single ('wa', one class): NumPy Mahalanobis per sample, view, Gaussian."""
    views = test_views.cpu().numpy()
    out = []
    for i in range(views.shape[0]):
        pred = []
        for v, r in enumerate(rots):
            delta = views[i, v] - mu[r]
            pred.append([np.sqrt(np.dot(np.dot(delta, inv[r]), delta))])
        num = [1 / p[0] for p in pred]
        denom = sum(num)
        out.append(sum(n * p[0] / denom for n, p in zip(num, pred)))
    return torch.tensor(out)


def timed(fn, device, repeats: int = 1):
    """(fastest of `repeats` calls in seconds, the last output)."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bank", type=int, default=5000)
    p.add_argument("--test", type=int, default=10000)
    p.add_argument("--samples", type=int, default=10, help="CSI's T")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = select_device(args.device)
    g = torch.Generator(device="cpu").manual_seed(0)
    T, d = args.samples, args.dim
    print(f"device: {machine()}; bank {args.bank}, test {args.test}, d={d}, CSI T={T} x {K} "
          "rotations, MCL SEI 8-way")

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device)

    train_z, test_z = rand(args.bank, T, K, d), rand(args.test, T, K, d)
    train_s, test_s = rand(args.bank, T, K, K) + 3, rand(args.test, T, K, K)
    t_csi, ours = timed(lambda: csi_batched(test_z, test_s, train_z, train_s), device, 3)
    t_csi_loop, loop = timed(lambda: csi_loop(test_z, test_s, train_z, train_s), device)
    assert torch.allclose(ours.double().cpu(), loop.double(), rtol=1e-4, atol=1e-4), "CSI differs"
    print(f"csi: batched {t_csi:.3f} s, loop {t_csi_loop:.2f} s, x{t_csi_loop / t_csi:.1f}")

    z_train = F.normalize(rand(args.bank * K, d), dim=1)
    rot_labels = torch.arange(K, device=device).repeat_interleave(args.bank)
    rots = [v // 2 for v in range(8)]
    test_views = F.normalize(rand(args.test, 8, d), dim=2)
    t_fit, (means, whiteners) = timed(lambda: fit_gaussians(z_train, rot_labels, K, 0.01), device, 3)
    mu, inv = numpy_gaussians(z_train, rot_labels, K, 0.01)
    t_sei, ours = timed(lambda: sei_batched(test_views, means, whiteners, rots), device, 3)
    t_sei_loop, loop = timed(lambda: sei_loop(test_views, mu, inv, rots), device, 3)
    assert torch.allclose(ours.double().cpu(), loop.double(), rtol=1e-6), "SEI differs"
    print(f"mcl-sei: batched {t_sei:.3f} s (+ {t_fit:.3f} s fitting the Gaussians, shared), "
          f"loop {t_sei_loop:.2f} s, x{t_sei_loop / t_sei:.1f}")
    print("scores agree: csi (rtol 1e-4), sei (rtol 1e-6)")
    print(f"speedup_vs_loop: {(t_csi_loop + t_sei_loop) / (t_csi + t_sei):.1f}")


if __name__ == "__main__":
    main()
