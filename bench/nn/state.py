"""Checkpoints and random state: seeding, the RNG states a resumed run restores, atomic
checkpoints with the previous one kept, and the trained model kept with its job.

Every file here holds tensors and plain containers only (NumPy's generator state is stored as a
tensor), so it loads with ``weights_only=True``: a run directory from someone else never runs code.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.files import atomic_torch_save, file_lock, load_torch_file
from bench.nn.context import FitContext

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
TRAINED = "model.pt"


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


def rng_state(device: torch.device) -> dict[str, Any]:
    """CPU, NumPy and Python states, and the CUDA state of this job's device only."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def load_checkpoint(model_dir: Path, log: Callable[[str], None]) -> dict | None:
    """The newest readable checkpoint (current, else the previous one), or None; a damaged
    file is named in the log and set aside, never fatal."""
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        path = model_dir / name
        if not path.exists():
            continue
        state = load_torch_file(path)
        if isinstance(state, dict) and {"model", "optimizer", "epoch"} <= set(state):
            return state
        log(f"bench: warning: {path} is damaged (unreadable, or not a plain torch file); "
            + ("trying the previous checkpoint" if name == CHECKPOINT else "training from scratch"))
        path.replace(path.with_name(path.name + ".damaged"))
    return None


def save_checkpoint(model_dir: Path, state: dict) -> None:
    """Keep the last good checkpoint as the previous one, then write the new one atomically."""
    current = model_dir / CHECKPOINT
    if current.exists():
        current.replace(model_dir / PREVIOUS_CHECKPOINT)
    atomic_torch_save(state, current)


def snapshot(state: Any) -> Any:
    """A copy of a checkpoint's state that training cannot change any more: every tensor copied
    to the CPU, every container rebuilt, other values deep-copied."""
    import copy

    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: snapshot(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(snapshot(v) for v in state)
    return copy.deepcopy(state)


class CheckpointWriter:
    """Checkpoints written off the training thread: the state is copied on it (`snapshot`), the
    file written atomically on a background thread, one write at a time. `wait` joins the write
    and raises its error; a kill during a write leaves the previous checkpoint to resume from."""

    def __init__(self, model_dir: Path):
        self.model_dir = Path(model_dir)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, state: dict) -> None:
        self.wait()
        copied = snapshot(state)
        self._thread = threading.Thread(target=self._write, args=(copied,), daemon=True,
                                        name="bench-checkpoint")
        self._thread.start()

    def _write(self, state: dict) -> None:
        try:
            save_checkpoint(self.model_dir, state)
        except BaseException as exc:  # raised on the training thread by `wait`
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def training_state(model, optimizer, scheduler, scaler, history: list, epoch: int,
                   device: torch.device) -> dict[str, Any]:
    """Everything a resumed run needs to continue bit for bit (on CPU)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_state(device), "history": history, "epoch": epoch}


def resume(ctx: FitContext, model, optimizer, scheduler, scaler, desc: str, epochs: int
           ) -> tuple[list[dict[str, float]], int]:
    """Restore the last checkpoint of ``ctx.model_dir`` if there is one: (history, first epoch)."""
    state = load_checkpoint(Path(ctx.model_dir), ctx.log) if ctx.model_dir else None
    if state is None:
        return [], 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])  # moves its tensors to the params' device
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"], ctx.device)
    ctx.log(f"resuming {desc} from epoch {state['epoch']} of {epochs}")
    return state["history"], state["epoch"]


def train_or_load(model: torch.nn.Module, ctx: FitContext,
                  fit: Callable[[], list[dict[str, float]]]) -> list[dict[str, float]]:
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
            if isinstance(state, dict) and "model" in state:
                model.load_state_dict(state["model"])
                model.eval()
                ctx.log(f"using the trained model in {model_dir}")
                return state["history"]
            ctx.log(f"bench: warning: {trained} is damaged (unreadable, or not a plain torch "
                    "file); training it again")
            trained.replace(trained.with_name(TRAINED + ".damaged"))
        for stale in model_dir.glob("features-*.pt"):  # features of some earlier weights
            stale.unlink()
        history = fit()
        atomic_torch_save({"model": model.state_dict(), "history": history}, trained)
        for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):  # the trained weights supersede them
            (model_dir / name).unlink(missing_ok=True)
        return history
