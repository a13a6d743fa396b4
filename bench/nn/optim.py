"""Optimisers and learning-rate schedules: SGD, Adam, and LARS exactly as torchlars wraps SGD in
CSI's code; CSI's warm-up + cosine schedule and a plain warm-up + cosine, both per step."""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class LARS(Optimizer):
    """LARS (You et al. 2017) exactly as torchlars wraps SGD in CSI's code.

    For every parameter with a gradient: adaptive = trust_coef * ||w|| / (||g|| + wd * ||w|| +
    eps) (1 when ||w|| or ||g|| is 0); g <- (g + wd * w) * adaptive; then SGD's momentum step with
    its own weight decay off. ``exclude_1d=True`` leaves biases and BatchNorm parameters (1-d)
    unscaled and undecayed, as SimCLR's LARS does (not CSI's).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 1e-6,
                 trust_coef: float = 0.001, eps: float = 1e-8, nesterov: bool = False,
                 exclude_1d: bool = False, foreach: bool = True):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coef=trust_coef, eps=eps, nesterov=nesterov, exclude_1d=exclude_1d,
                        foreach=foreach)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if group["foreach"]:
                self._step_foreach(group)
            else:
                self._step_loop(group)

    def _step_foreach(self, group) -> None:
        """The same update over all tensors at once (multi-tensor ops: a handful of kernels per
        step instead of ~17 per tensor), element for element the same arithmetic as the loop."""
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        wd, trust, eps, momentum = (group["weight_decay"], group["trust_coef"], group["eps"],
                                    group["momentum"])
        grads = [p.grad for p in params]
        scaled = [i for i, p in enumerate(params) if not (group["exclude_1d"] and p.ndim <= 1)]
        if scaled:
            ps, gs = [params[i] for i in scaled], [grads[i] for i in scaled]
            w_norm = torch.stack(torch._foreach_norm(ps))
            g_norm = torch.stack(torch._foreach_norm(gs))
            adaptive = torch.where((w_norm > 0) & (g_norm > 0),
                                   trust * w_norm / (g_norm + wd * w_norm + eps),
                                   torch.ones_like(w_norm))
            new = torch._foreach_add(gs, ps, alpha=wd)
            torch._foreach_mul_(new, list(adaptive.unbind()))
            grads = list(grads)
            for i, g in zip(scaled, new):
                grads[i] = g
        bufs = [self.state[p].get("momentum_buffer") for p in params]
        fresh = [i for i, b in enumerate(bufs) if b is None]
        old = [i for i, b in enumerate(bufs) if b is not None]
        for i in fresh:
            bufs[i] = self.state[params[i]]["momentum_buffer"] = grads[i].clone()
        if old:
            kept = [bufs[i] for i in old]
            torch._foreach_mul_(kept, momentum)
            torch._foreach_add_(kept, [grads[i] for i in old])
        updates = torch._foreach_add(grads, bufs, alpha=momentum) if group["nesterov"] else bufs
        torch._foreach_add_(params, updates, alpha=-group["lr"])

    def _step_loop(self, group) -> None:
        """One tensor at a time, as torchlars does (the reference the foreach step equals)."""
        wd, trust, eps = group["weight_decay"], group["trust_coef"], group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            if not (group["exclude_1d"] and p.ndim <= 1):
                w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                adaptive = torch.where((w_norm > 0) & (g_norm > 0),
                                       trust * w_norm / (g_norm + wd * w_norm + eps),
                                       torch.ones_like(w_norm))
                g = g.add(p, alpha=wd).mul_(adaptive)
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.clone()
            else:
                buf.mul_(group["momentum"]).add_(g)
            update = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
            p.add_(update, alpha=-group["lr"])


def make_optimizer(params, config) -> Optimizer:
    """The optimiser a config names (its optimizer, lr, momentum, weight_decay, nesterov), as
    multi-tensor (foreach) operations: tens of operators per step instead of a loop over the
    tensors (the same weights as the loop: tests/test_train.py)."""
    c = config
    if c.optimizer == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                               nesterov=c.nesterov, foreach=True)
    if c.optimizer == "lars":
        return LARS(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                    nesterov=c.nesterov, exclude_1d=getattr(c, "lars_exclude_1d", False))
    if c.optimizer == "adam":
        return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay, foreach=True)
    raise ValueError(f"unknown optimizer {c.optimizer!r} (sgd, lars, adam)")


def cosine_factor(step: int, total_steps: int, warmup_steps: int, final_fraction: float) -> float:
    """Linear warm-up from 1/warmup to 1, then cosine down to final_fraction (per step)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


CSI_WARMUP_MULTIPLIER = 10.0  # CSI: lr_init warmed up x10 (GradualWarmupScheduler multiplier)


def csi_factor(step: int, steps_per_epoch: int, epochs: int, warmup_epochs: int) -> float:
    """CSI's lr at optimiser step `step` (0-based) as a fraction of the peak lr.

    CSI steps GradualWarmupScheduler(multiplier 10, total_epoch=warmup) around
    CosineAnnealingLR(T_max=epochs) *after* each optimiser step with the fractional epoch
    e - 1 + n / L of the step just taken, so step t runs at the value set by u = (t - 1) / L
    (u = 0 for the first two steps): lr_init (1 + 9 u / W) while u <= W; the cosine's base
    lr_init x 10 on the first step past the warm-up; then lr_init x 10 x (1 + cos(pi (u - W) /
    epochs)) / 2, which never quite reaches 0 (the cosine spans `epochs` from the warm-up's end).
    """
    m, w, per = CSI_WARMUP_MULTIPLIER, warmup_epochs, steps_per_epoch
    u = max(0, step - 1) / per
    if w > 0 and u <= w:
        return (1 + (m - 1) * u / w) / m
    previous = max(0, step - 2) / per
    if w > 0 and step >= 1 and previous <= w:  # the cosine's first call returns its base lr
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (u - w) / epochs))


def make_schedule(optimizer: Optimizer, config, steps_per_epoch: int
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step learning-rate factor of a config's `schedule` (peak lr = config.lr)."""
    c = config
    if c.schedule == "csi":
        def factor(step: int) -> float:
            return csi_factor(step, steps_per_epoch, c.epochs, c.warmup_epochs)
    else:
        def factor(step: int) -> float:
            return cosine_factor(step, c.epochs * steps_per_epoch,
                                 c.warmup_epochs * steps_per_epoch, c.final_lr_fraction)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = True) -> int:
    """Batches per epoch: full ones only (drop_last), or with the last partial one; a set
    smaller than one batch gives one batch."""
    return max(1, n // batch_size if drop_last else -(-n // batch_size))
