"""Batched scoring: k-NN cosine scores, CSI's ensemble score, class-conditional Gaussians and SEI.

All matrix work on the device in chunks; never a Python loop over samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

# Test rows per similarity block. 1024 x a 5,000-image bank is 20 MB of float32, small enough to
# stay in cache for the max that follows: 3x faster than 2048 or unchunked on a 2-core CPU
# (benchmarks/score_throughput.py), and it bounds memory at CHUNK x bank size floats.
CHUNK = 1024


def max_cosine_times_norm(z_test: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """CSI's SimCLR score: max over the bank of cos(z_test, bank) times ||z_test||.

    `bank` must already be L2-normalised; returns normality (higher = more normal).
    """
    bank_t = bank.t().contiguous()
    out = []
    for part in z_test.split(CHUNK):
        cos = torch.mm(F.normalize(part, dim=1), bank_t)
        out.append(cos.amax(1) * part.norm(dim=1))
    return torch.cat(out)


def max_cosine(z_test: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """max over the (L2-normalised) bank of cos(z_test, bank): normality, the norm left out."""
    bank_t = bank.t().contiguous()
    return torch.cat([torch.mm(F.normalize(part, dim=1), bank_t).amax(1)
                      for part in z_test.split(CHUNK)])


def knn_sum_of_squares(test: torch.Tensor, bank: torch.Tensor, k: int = 2) -> torch.Tensor:
    """The sum of the squared Euclidean distances to the k nearest bank rows: DN2's, PANDA's and
    MSC's score (their faiss IndexFlatL2 returns squared distances, summed)."""
    bank = bank.float()
    bank_sq = bank.square().sum(1)
    out = []
    for part in test.float().split(CHUNK):
        sq = part.square().sum(1, keepdim=True) + bank_sq[None] - 2 * part @ bank.t()
        out.append(sq.clamp_min(0).topk(min(k, bank.shape[0]), dim=1, largest=False)
                   .values.sum(1))
    return torch.cat(out)


def max_inner_product(z: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """max_m <z_i, bank_m> for every row of z."""
    bank_t = bank.t().contiguous()
    return torch.cat([torch.mm(part, bank_t).amax(1) for part in z.split(CHUNK)])


def csi_scores(test_z: torch.Tensor, test_shift: torch.Tensor, train_z: torch.Tensor,
               train_shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CSI-ens normality scores (higher = more normal): (full score, similarity term alone).

    Inputs are already averaged over the T augmented samples: test_z and train_z are
    [K, N, d] unnormalised mean projections per rotation k; test_shift and train_shift are
    [K, N, K] mean shift logits. The training side gives the axes a_k (normalised mean
    projections) and the weights w_sim[k] = 1 / mean ||mean projection||,
    w_shi[k] = 1 / mean logit of k at rotation k.
    """
    k_shifts = test_z.shape[0]
    sim_total = torch.zeros(test_z.shape[1], device=test_z.device)
    shi_total = torch.zeros_like(sim_total)
    for k in range(k_shifts):
        axis = F.normalize(train_z[k], dim=1)
        w_sim = 1.0 / train_z[k].norm(dim=1).mean()
        w_shi = 1.0 / train_shift[k][:, k].mean()
        sim_total += w_sim * max_inner_product(test_z[k], axis)
        shi_total += w_shi * test_shift[k][:, k]
    return (sim_total + shi_total) / k_shifts, sim_total / k_shifts


MAX_RIDGE_GROWTH = 30  # tenfold steps of the ridge before a covariance is given up on


def fit_gaussians(z: torch.Tensor, labels: torch.Tensor, n_labels: int, ridge: float,
                  relative: bool = True, on_fallback: Callable[[str], None] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One Gaussian per label: means [L, d] and whitening matrices [L, d, d] (float64).

    The covariance is the unbiased sample covariance (numpy.cov) plus a ridge on the diagonal:
    `ridge` itself (``relative=False``; MCL's code adds 1e-9) or `ridge` x the mean variance
    (``relative=True``), which keeps it positive definite when a label has fewer samples than
    dimensions. Where the Cholesky factorisation still fails, the ridge grows tenfold until it
    succeeds and `on_fallback` is told. It is factored once here, Sigma = L L^T, and the whitener
    is W = L^-T, so the precision is W W^T and the Mahalanobis distance is ||(z - mu) W||:
    scoring needs one matmul per Gaussian.
    """
    d = z.shape[1]
    means = torch.zeros(n_labels, d, dtype=torch.float64, device=z.device)
    whiteners = torch.zeros(n_labels, d, d, dtype=torch.float64, device=z.device)
    eye = torch.eye(d, dtype=torch.float64, device=z.device)
    for label in range(n_labels):
        x = z[labels == label].double()
        if x.shape[0] < 2:
            raise ValueError(f"label {label} has {x.shape[0]} training samples; need at least 2")
        if not torch.isfinite(x).all():
            raise ValueError(f"label {label}: features that are not finite (NaN or infinite "
                             "weights, or an overflow); no Gaussian fits them")
        mu = x.mean(0)
        centred = x - mu
        cov = centred.t() @ centred / (x.shape[0] - 1)
        scale = cov.diagonal().mean().clamp_min(1e-12) if relative else 1.0
        added = ridge * scale
        chol, info = torch.linalg.cholesky_ex(cov + added * eye)
        for _ in range(MAX_RIDGE_GROWTH):  # not positive definite: grow the ridge tenfold
            if int(info) == 0:
                break
            added = max(10 * float(added), 1e-12)
            chol, info = torch.linalg.cholesky_ex(cov + added * eye)
            if int(info) == 0 and on_fallback is not None:
                on_fallback(f"the covariance of label {label} ({x.shape[0]} samples, {d} "
                            f"dimensions) needed a ridge of {added:.3g} instead of "
                            f"{float(ridge * scale):.3g} to be positive definite")
        if int(info) != 0:
            raise ValueError(f"the covariance of label {label} is not positive definite even "
                             f"with a ridge of {added:.3g}")
        means[label] = mu
        whiteners[label] = torch.linalg.solve_triangular(chol, eye, upper=False).t()
    return means, whiteners


def mahalanobis(z: torch.Tensor, means: torch.Tensor, whiteners: torch.Tensor) -> torch.Tensor:
    """Mahalanobis distance of every row of z [N, d] to every Gaussian: [N, L] (float64).

    `means` and `whiteners` come from `fit_gaussians`. The matmul runs in z's precision (float32
    for network features): 5x faster than a float64 quadratic form on CPU and within 1e-6
    relative of it (benchmarks/score_throughput.py checks the agreement).
    """
    dtype = z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32
    z = z.to(dtype)
    means, whiteners = means.to(dtype), whiteners.to(dtype)
    out = torch.empty(z.shape[0], means.shape[0], dtype=torch.float64, device=z.device)
    for label in range(means.shape[0]):
        out[:, label] = torch.mm(z - means[label], whiteners[label]).square_().sum(1).double().sqrt_()
    return out


def sei_combine(distances: torch.Tensor, method: Literal["wa", "mean", "min"]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-ensemble over views: distances [N, V, C] -> (anomaly score [N], predicted class [N]).

    ``wa``: per class the weighted average of the V distances with weights 1/d (the harmonic mean);
    ``mean``: their sum; ``min``: their minimum. The anomaly score is the minimum over classes of
    the combination and the predicted class its argmin.
    """
    if method == "wa":
        combined = distances.shape[1] / (1.0 / distances.clamp_min(1e-12)).sum(1)
    elif method == "mean":
        combined = distances.sum(1)
    elif method == "min":
        combined = distances.min(1).values
    else:
        raise ValueError(f"unknown SEI combination {method!r} (wa, mean, min)")
    score, pred = combined.min(1)
    return score, pred
