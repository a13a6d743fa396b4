"""Shared training helpers: device data, batches by index, optimisers, schedule, checkpoints.

A method's file writes only its loss for one batch of indices (readable on one screen); `train`
runs the epochs: data stays on the device as uint8, bf16 autocast and channels_last on CUDA, a NaN
guard that syncs only every `log_every` steps, an atomic checkpoint every `checkpoint_every`
epochs and a resume from the last one, and a progress bar with loss and images/s.
"""

from __future__ import annotations

import contextlib
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

from bench.store import atomic_torch_save, file_lock

CHECKPOINT = "checkpoint.pt"
TRAINED = "model.pt"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, then CPU; ``cuda:1`` etc. are passed through."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision on CPU (CPU bf16 is slower on most machines)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def device_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The whole uint8 data set moved to the device once; batches are drawn from it by index."""
    return images.to(device, non_blocking=True).contiguous()


def as_input(x: torch.Tensor) -> torch.Tensor:
    """A float batch laid out for the model (channels_last on CUDA)."""
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x


class LARS(Optimizer):
    """SGD with layer-wise adaptive rate scaling (You et al. 2017), as CSI uses (torchlars).

    Each parameter's step is scaled by trust_coef * ||w|| / (||g|| + wd * ||w||); biases and
    BatchNorm weights (1-d parameters) are excluded from adaptation and weight decay, as in
    SimCLR's LARS.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 1e-6,
                 trust_coef: float = 0.001, nesterov: bool = False):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coef=trust_coef, nesterov=nesterov)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if p.ndim > 1:
                    g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where((w_norm > 0) & (g_norm > 0),
                                        group["trust_coef"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    g = g * trust
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = g.clone()
                else:
                    buf.mul_(group["momentum"]).add_(g)
                update = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                p.add_(update, alpha=-group["lr"])


def make_optimizer(params, name: str, lr: float, momentum: float, weight_decay: float,
                   nesterov: bool) -> Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=nesterov)
    if name == "lars":
        return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r} (sgd, lars, adam)")


def cosine_schedule(optimizer: Optimizer, total_steps: int, warmup_steps: int,
                    final_fraction: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step factor: linear warm-up from 1/warmup to 1, then cosine down to final_fraction."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (drop_last); a set smaller than one batch gives one batch."""
    return max(1, n // batch_size)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def train(model: torch.nn.Module, step: Callable[[torch.Tensor], torch.Tensor], n: int, *,
          epochs: int, batch_size: int, optimizer: Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, ctx, desc: str,
          checkpoint_every: int = 10, log_every: int = 20) -> list[dict[str, float]]:
    """Run `epochs` epochs of `step(batch_indices) -> loss` over n items; returns the history.

    Resumes from ``ctx.model_dir/checkpoint.pt`` when present (model, optimiser, schedule, RNG
    states and history), so an interrupted run ends with the same weights as an uninterrupted one.
    """
    device = ctx.device
    ckpt_path = Path(ctx.model_dir) / CHECKPOINT if ctx.model_dir else None
    history: list[dict[str, float]] = []
    start = 0
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        history, start = state["history"], state["epoch"]
        ctx.log(f"resuming {desc} from epoch {start} of {epochs}")
    per_epoch = steps_per_epoch(n, batch_size)
    bar = _progress(ctx, total=epochs * per_epoch, initial=start * per_epoch, desc=desc)
    model.train()
    for epoch in range(start, epochs):
        t0, total = time.perf_counter(), torch.zeros((), device=device)
        order = torch.randperm(n, device=device)
        for i in range(per_epoch):
            index = order[i * batch_size:(i + 1) * batch_size]
            with autocast(device):
                loss = step(index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
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
        if ckpt_path is not None and ((epoch + 1) % checkpoint_every == 0 or done):
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                               "history": history, "epoch": epoch + 1}, ckpt_path)
        if getattr(ctx, "on_epoch_end", None) is not None:
            ctx.on_epoch_end(epoch + 1)
    bar.close()
    model.eval()
    return history


def _progress(ctx, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    show = bool(getattr(ctx, "progress", True)) and sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, disable=not show, leave=False,
                unit="step", dynamic_ncols=True)


def train_or_load(model: torch.nn.Module, ctx, fit: Callable[[], list[dict[str, float]]]
                  ) -> list[dict[str, float]]:
    """Load the trained weights kept with the job, or train (resuming) and keep them.

    A job that differs only in score options shares the model folder and does not retrain; a lock
    keeps two workers from training the same model at once.
    """
    if ctx.model_dir is None:
        return fit()
    model_dir = Path(ctx.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(model_dir / ".lock"):
        trained = model_dir / TRAINED
        if trained.exists():
            state = torch.load(trained, map_location=ctx.device, weights_only=False)
            model.load_state_dict(state["model"])
            model.eval()
            ctx.log(f"using the trained model in {model_dir}")
            return state["history"]
        for stale in model_dir.glob("features-*.pt"):  # features of some earlier weights
            stale.unlink()
        history = fit()
        atomic_torch_save({"model": model.state_dict(), "history": history}, trained)
        (model_dir / CHECKPOINT).unlink(missing_ok=True)  # the trained weights supersede it
        return history


@torch.no_grad()
def batched_forward(model: torch.nn.Module, images: torch.Tensor, transform: Callable,
                    batch_size: int, device: torch.device, keys: tuple[str, ...] = ("z",),
                    progress: bool = False) -> dict[str, torch.Tensor]:
    """Run `model(transform(uint8 batch))` over all images; returns the outputs, float32, on device.

    A progress bar (features) shows on a terminal when `progress` is set.
    """
    from tqdm.auto import tqdm

    model.eval()
    outs: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    starts = range(0, images.shape[0], batch_size)
    show = progress and sys.stderr.isatty() and len(starts) > 4
    for start in tqdm(starts, desc="features", unit="batch", leave=False, disable=not show):
        x = images[start:start + batch_size].to(device, non_blocking=True)
        with autocast(device):
            out = model(as_input(transform(x)))
        for k in keys:
            outs[k].append(out[k].float())
    return {k: torch.cat(v) if v else torch.empty(0) for k, v in outs.items()}
