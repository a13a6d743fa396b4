"""The training loop and the forward passes around it.

A method's file writes only its loss for one batch of indices; `train` runs the epochs: data
stays on the device as uint8, the network runs under the precision policy
(`bench/nn/precision.py`), a NaN guard syncs only every `log_every` steps, an atomic checkpoint
every `checkpoint_every` epochs and a resume from the last good one (`bench/nn/state.py`), and a
progress bar with loss and images/s on a terminal (a line every `LOG_SECONDS` in a log).
Optimisers and schedules: `bench/nn/optim.py`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.optim import Optimizer

from bench.nn.context import FitContext
from bench.nn.optim import steps_per_epoch
from bench.nn.precision import FP32, Precision
from bench.nn.state import CheckpointWriter, resume, training_state

LOG_SECONDS = 60.0  # progress line interval in a log (stderr not a terminal, or workers)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


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
    policy, channels_last on CUDA). One channel: always the standard strides (the same memory
    order either way), so a compiled network sees one layout and does not recompile."""
    if x.shape[1] == 1:
        return x.contiguous()
    channels_last = x.is_cuda if precision is None else precision.channels_last
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _optimise(loss: torch.Tensor, model: torch.nn.Module, optimizer: Optimizer,
              scaler: torch.amp.GradScaler, clip_grad_norm: float) -> None:
    """One optimiser step (the scaler is a pass-through unless fp16); the gradient norm clipped
    first where asked (PANDA's code)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad_norm:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()


def train(model: torch.nn.Module, step: Callable[[torch.Tensor], torch.Tensor], n: int, *,
          epochs: int, batch_size: int, optimizer: Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, ctx: FitContext, desc: str,
          checkpoint_every: int = 10, log_every: int = 20, drop_last: bool = True,
          clip_grad_norm: float = 0.0) -> list[dict[str, float]]:
    """Run `epochs` epochs of `step(batch_indices) -> loss` over n items; returns the history.
    Resumes from ``ctx.model_dir/checkpoint.pt`` (model, optimiser, schedule, RNG states,
    history): an interrupted run ends with the weights of an uninterrupted one (bit for bit on
    CPU; on CUDA under --deterministic). Checkpoints are written off the training thread."""
    device, precision = ctx.device, ctx.precision
    scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_grad_scaler())
    history, start = resume(ctx, model, optimizer, scheduler, scaler, desc, epochs)
    per_epoch = steps_per_epoch(n, batch_size, drop_last)
    bar = progress_bar(ctx, total=epochs * per_epoch, initial=start * per_epoch, desc=desc)
    writer = CheckpointWriter(Path(ctx.model_dir)) if ctx.model_dir is not None else None
    model.train()
    try:
        for epoch in range(start, epochs):
            t0, total, seen = time.perf_counter(), torch.zeros((), device=device), 0
            order = torch.randperm(n, device=device)
            for i in range(per_epoch):
                index = order[i * batch_size:(i + 1) * batch_size]
                with precision.autocast(device):
                    loss = step(index)
                _optimise(loss, model, optimizer, scaler, clip_grad_norm)
                scheduler.step()
                total, seen = total + loss.detach().float(), seen + len(index)
                if (i + 1) % log_every == 0 or i + 1 == per_epoch:  # the only host syncs
                    mean = (total / (i + 1)).item()
                    if not math.isfinite(mean):
                        raise TrainingDiverged(f"{desc}: loss is {mean} at epoch {epoch + 1}")
                    rate = seen / (time.perf_counter() - t0)
                    bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{rate:.0f}", refresh=False)
                bar.update(1)
            seconds = time.perf_counter() - t0
            history.append({"epoch": epoch + 1, "loss": (total / per_epoch).item(),
                            "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
                            "images_per_second": seen / seconds})
            if writer is not None and ((epoch + 1) % checkpoint_every == 0
                                       or epoch + 1 == epochs):  # copied now, written behind
                writer.submit(training_state(model, optimizer, scheduler, scaler, history,
                                             epoch + 1, device))
            if ctx.on_epoch_end is not None:
                ctx.on_epoch_end(epoch + 1)
    finally:
        if writer is not None:
            writer.wait()  # the last checkpoint is on disk before the job goes on, or fails
    bar.close()
    model.eval()
    return history


class _LogLines:
    """A tqdm stand-in for logs: one line every LOG_SECONDS with the step count and postfix."""

    def __init__(self, log: Callable[[str], None], total: int, initial: int, desc: str, unit: str):
        self.log, self.total, self.n, self.desc, self.unit = log, total, initial, desc, unit
        self.postfix: dict[str, str] = {}
        self.started = self.last = time.monotonic()
        self.log(f"{desc}: {initial}/{total} {unit}s ({100 * initial / max(1, total):.0f}%)")

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


def progress_bar(ctx: FitContext, total: int, initial: int, desc: str, unit: str = "step"):
    """A tqdm bar on a terminal; in a log (stderr not a terminal, or progress "lines") a line
    at the start and every LOG_SECONDS; nothing when the context turns progress off."""
    from tqdm.auto import tqdm

    if not ctx.progress:
        return tqdm(total=total, disable=True)
    if ctx.progress is True and sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, leave=False, unit=unit,
                    dynamic_ncols=True)
    return _LogLines(ctx.log, total, initial, desc, unit)


@torch.no_grad()
def batched_forward(model: torch.nn.Module, images: torch.Tensor, transform: Callable,
                    batch_size: int, device: torch.device, keys: tuple[str, ...] = ("z",),
                    progress: bool | str = False, precision: Precision = FP32
                    ) -> dict[str, torch.Tensor]:
    """Run `model(transform(uint8 batch))` over all images under the precision policy; returns
    the outputs as float32 on the device (scores are computed from them in fp32)."""
    from tqdm.auto import tqdm

    model.eval()
    if device.type == "cuda" and images.device.type == "cpu" and not images.is_pinned():
        images = images.pin_memory()  # batches then copy asynchronously (non_blocking)
    outs: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    starts = range(0, images.shape[0], batch_size)
    show = progress is True and sys.stderr.isatty() and len(starts) > 4  # not "lines"
    for start in tqdm(starts, desc="features", unit="batch", leave=False, disable=not show):
        x = images[start:start + batch_size].to(device, non_blocking=True)
        x = transform(x)
        with precision.autocast(device):
            out = model(as_input(x, precision))
        for k in keys:
            outs[k].append(out[k].float())
    return {k: torch.cat(v) if v else torch.empty(0) for k, v in outs.items()}
