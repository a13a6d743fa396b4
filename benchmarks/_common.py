"""Helpers shared by the benchmark scripts (not a test module)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.nn.devices import cpu_name, describe_machine  # noqa: F401 - cpu_name re-exported


def bench_run(precision: str, bench_args: list[str], workdir: Path) -> tuple[Path, float]:
    """`bench run ARGS --precision P` in a fresh process into a fresh run directory under workdir;
    returns that directory and the wall seconds. A failed run ends the benchmark with its last
    error line."""
    out = workdir / f"{precision}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "bench", "run", *bench_args, "--precision", precision,
           "--out", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or [""]
        sys.exit(f"bench run --precision {precision} failed ({done.returncode}): {last[0]}")
    return out, wall


def machine() -> str:
    return describe_machine(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, steps: int, warmup: int = 2) -> float:
    """Seconds per call of fn, after warm-up calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / steps


def top_level_ops(fn) -> int:
    """aten operators `fn` issues directly, not those inside another aten operator (each a
    kernel launch on CUDA), counted with torch.profiler on the CPU."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name.startswith("aten::")
               and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))


def checkpoint_cost(model: torch.nn.Module, opt: torch.optim.Optimizer,
                    device: torch.device) -> dict[str, float]:
    """What a checkpoint of `model` and `opt` costs the training step: seconds written in it
    (synchronous, with fsync) and seconds to copy it and hand it to the background writer
    (CheckpointWriter), and its size in MiB."""
    import tempfile

    from bench.nn.state import CHECKPOINT, CheckpointWriter, save_checkpoint, training_state

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        save_checkpoint(Path(folder), training_state(model, opt, sched, scaler, [], 1, device))
        sync_s = time.perf_counter() - t0
        mib = (Path(folder) / CHECKPOINT).stat().st_size / 2**20
        writer = CheckpointWriter(Path(folder))
        t0 = time.perf_counter()
        writer.submit(training_state(model, opt, sched, scaler, [], 2, device))
        behind_s = time.perf_counter() - t0
        writer.wait()
    return {"checkpoint_sync_s": sync_s, "checkpoint_behind_s": behind_s, "checkpoint_mib": mib}
