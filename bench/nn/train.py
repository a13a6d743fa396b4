"""Shared training helpers: device data, batches by index, optimisers, schedules, checkpoints.

A method's file writes only its loss for one batch of indices (readable on one screen); `train`
runs the epochs: data stays on the device as uint8, the network runs under the precision policy
(`bench/nn/precision.py`), a NaN guard syncs only every `log_every` steps, an atomic checkpoint
every `checkpoint_every` epochs and a resume from the last good one, and a progress bar with loss
and images/s on a terminal (a line every `LOG_SECONDS` in a log).
"""

from __future__ import annotations

import hashlib
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim import Optimizer

from bench.nn.precision import FP32, Precision
from bench.store import atomic_torch_save, file_lock, load_torch_file

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
TRAINED = "model.pt"
LOG_SECONDS = 60.0  # progress line interval when stderr is not a terminal


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, then CPU; ``cuda:1`` etc. are passed through."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_model(model: torch.nn.Module, device: torch.device,
                  precision: Precision = FP32) -> torch.nn.Module:
    model = model.to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def device_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The whole uint8 data set moved to the device once; batches are drawn from it by index."""
    return images.to(device, non_blocking=True).contiguous()


def as_input(x: torch.Tensor, precision: Precision | None = None) -> torch.Tensor:
    """A float batch laid out for the model (channels_last where the policy says so; without a
    policy, channels_last on CUDA)."""
    channels_last = x.is_cuda if precision is None else precision.channels_last
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class LARS(Optimizer):
    """LARS (You et al. 2017) exactly as torchlars wraps SGD in CSI's code.

    For every parameter with a gradient: adaptive = trust_coef * ||w|| / (||g|| + wd * ||w|| +
    eps) (1 when ||w|| or ||g|| is 0); g <- (g + wd * w) * adaptive; then SGD's momentum step with
    its own weight decay off. ``exclude_1d=True`` leaves biases and BatchNorm parameters (1-d)
    unscaled and undecayed, as SimCLR's LARS does (not CSI's).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 1e-6,
                 trust_coef: float = 0.001, eps: float = 1e-8, nesterov: bool = False,
                 exclude_1d: bool = False):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coef=trust_coef, eps=eps, nesterov=nesterov, exclude_1d=exclude_1d)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
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
    """The optimiser a config names (its optimizer, lr, momentum, weight_decay, nesterov)."""
    c = config
    if c.optimizer == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                               nesterov=c.nesterov)
    if c.optimizer == "lars":
        return LARS(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                    nesterov=c.nesterov, exclude_1d=getattr(c, "lars_exclude_1d", False))
    if c.optimizer == "adam":
        return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
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


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (drop_last); a set smaller than one batch gives one batch."""
    return max(1, n // batch_size)


def _rng_state(device: torch.device) -> dict[str, Any]:
    """CPU, NumPy and Python states, and the CUDA state of this job's device only."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):  # written by an older version: every visible GPU
            cuda = cuda[0]
        torch.cuda.set_rng_state(cuda.cpu(), device)


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (CPU and every CUDA device) from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def reseed(seed: int, stream: str) -> None:
    """Seed every generator from (seed, stream), so a phase after training (the scoring bank, the
    test scores) draws the same augmentations whether the network was just trained or loaded."""
    digest = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
    seed_everything(int.from_bytes(digest[:4], "little"))


def _load_checkpoint(model_dir: Path, log: Callable[[str], None]) -> dict | None:
    """The newest readable checkpoint (current, else the previous one), or None; a damaged
    file is named in the log and set aside, never fatal."""
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        path = model_dir / name
        if not path.exists():
            continue
        state = load_torch_file(path)
        if state is not None and {"model", "optimizer", "epoch"} <= set(state):
            return state
        log(f"bench: warning: {path} is damaged (unreadable); "
            + ("trying the previous checkpoint" if name == CHECKPOINT else "training from scratch"))
        path.replace(path.with_name(path.name + ".damaged"))
    return None


def _save_checkpoint(model_dir: Path, state: dict) -> None:
    """Keep the last good checkpoint as the previous one, then write the new one atomically."""
    current = model_dir / CHECKPOINT
    if current.exists():
        current.replace(model_dir / PREVIOUS_CHECKPOINT)
    atomic_torch_save(state, current)


def train(model: torch.nn.Module, step: Callable[[torch.Tensor], torch.Tensor], n: int, *,
          epochs: int, batch_size: int, optimizer: Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, ctx, desc: str,
          checkpoint_every: int = 10, log_every: int = 20) -> list[dict[str, float]]:
    """Run `epochs` epochs of `step(batch_indices) -> loss` over n items; returns the history.

    Resumes from ``ctx.model_dir/checkpoint.pt`` when present (model, optimiser, schedule, RNG
    states and history), so an interrupted run ends with the same weights as an uninterrupted one
    (bit for bit on CPU; on CUDA only under --deterministic).
    """
    device = ctx.device
    precision: Precision = getattr(ctx, "precision", FP32)
    model_dir = Path(ctx.model_dir) if ctx.model_dir else None
    scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler() else None
    history: list[dict[str, float]] = []
    start = 0
    state = _load_checkpoint(model_dir, ctx.log) if model_dir is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])  # moves its tensors to the params' device
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], device)
        history, start = state["history"], state["epoch"]
        ctx.log(f"resuming {desc} from epoch {start} of {epochs}")
    per_epoch = steps_per_epoch(n, batch_size)
    bar = progress_bar(ctx, total=epochs * per_epoch, initial=start * per_epoch, desc=desc,
                       unit="step")
    model.train()
    for epoch in range(start, epochs):
        t0, total = time.perf_counter(), torch.zeros((), device=device)
        order = torch.randperm(n, device=device)
        for i in range(per_epoch):
            index = order[i * batch_size:(i + 1) * batch_size]
            with precision.autocast(device):
                loss = step(index)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            scheduler.step()
            total += loss.detach().float()
            if (i + 1) % log_every == 0 or i + 1 == per_epoch:  # the only host syncs
                mean = (total / (i + 1)).item()
                if not math.isfinite(mean):
                    raise TrainingDiverged(f"{desc}: loss is {mean} at epoch {epoch + 1}")
                rate = (i + 1) * len(index) / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{rate:.0f}", refresh=False)
            bar.update(1)
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "loss": (total / per_epoch).item(),
                        "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
                        "images_per_second": per_epoch * min(batch_size, n) / seconds})
        done = epoch + 1 == epochs
        if model_dir is not None and ((epoch + 1) % checkpoint_every == 0 or done):
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": _rng_state(device),
                     "history": history, "epoch": epoch + 1}
            if scaler is not None:
                state["scaler"] = scaler.state_dict()
            _save_checkpoint(model_dir, state)
        if getattr(ctx, "on_epoch_end", None) is not None:
            ctx.on_epoch_end(epoch + 1)
    bar.close()
    model.eval()
    return history


class _LogLines:
    """A tqdm stand-in for logs: one line every LOG_SECONDS with the step count and postfix."""

    def __init__(self, log: Callable[[str], None], total: int, initial: int, desc: str, unit: str):
        self.log, self.total, self.n, self.desc, self.unit = log, total, initial, desc, unit
        self.postfix: dict[str, str] = {}
        self.started = self.last = time.monotonic()

    def set_postfix(self, refresh: bool = False, **kwargs) -> None:
        self.postfix.update(kwargs)

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if now - self.last >= LOG_SECONDS:
            self.last = now
            extra = " ".join(f"{k}={v}" for k, v in self.postfix.items())
            self.log(f"{self.desc}: {self.n}/{self.total} {self.unit}s "
                     f"({100 * self.n / max(1, self.total):.0f}%, {now - self.started:.0f}s) "
                     + extra)

    def close(self) -> None:
        pass

    def __iter__(self):  # pragma: no cover - not used as an iterator
        raise TypeError


def progress_bar(ctx, total: int, initial: int, desc: str, unit: str):
    """A tqdm bar on a terminal; in a log (stderr not a terminal) a line every LOG_SECONDS;
    nothing when the context turns progress off."""
    if not getattr(ctx, "progress", True):
        from tqdm.auto import tqdm

        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, leave=False, unit=unit,
                    dynamic_ncols=True)
    return _LogLines(getattr(ctx, "log", print), total, initial, desc, unit)


def train_or_load(model: torch.nn.Module, ctx, fit: Callable[[], list[dict[str, float]]]
                  ) -> list[dict[str, float]]:
    """Load the trained weights kept with the job, or train (resuming) and keep them.

    A job that differs only in score options shares the model folder and does not retrain; a lock
    keeps two workers from training the same model at once. A damaged model.pt is set aside and
    the model is trained again (from the last good checkpoint if one is left).
    """
    if ctx.model_dir is None:
        return fit()
    model_dir = Path(ctx.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(model_dir / ".lock"):
        trained = model_dir / TRAINED
        if trained.exists():
            state = load_torch_file(trained)
            if state is not None and "model" in state:
                model.load_state_dict(state["model"])
                model.eval()
                ctx.log(f"using the trained model in {model_dir}")
                return state["history"]
            ctx.log(f"bench: warning: {trained} is damaged (unreadable); training it again")
            trained.replace(trained.with_name(TRAINED + ".damaged"))
        for stale in model_dir.glob("features-*.pt"):  # features of some earlier weights
            stale.unlink()
        history = fit()
        atomic_torch_save({"model": model.state_dict(), "history": history}, trained)
        for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):  # the trained weights supersede them
            (model_dir / name).unlink(missing_ok=True)
        return history


@torch.no_grad()
def batched_forward(model: torch.nn.Module, images: torch.Tensor, transform: Callable,
                    batch_size: int, device: torch.device, keys: tuple[str, ...] = ("z",),
                    progress: bool = False, precision: Precision = FP32
                    ) -> dict[str, torch.Tensor]:
    """Run `model(transform(uint8 batch))` over all images under the precision policy; returns
    the outputs as float32 on the device (scores are computed from them in fp32)."""
    from tqdm.auto import tqdm

    model.eval()
    outs: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    starts = range(0, images.shape[0], batch_size)
    show = progress and sys.stderr.isatty() and len(starts) > 4
    for start in tqdm(starts, desc="features", unit="batch", leave=False, disable=not show):
        x = images[start:start + batch_size].to(device, non_blocking=True)
        x = transform(x)
        with precision.autocast(device):
            out = model(as_input(x, precision))
        for k in keys:
            outs[k].append(out[k].float())
    return {k: torch.cat(v) if v else torch.empty(0) for k, v in outs.items()}
