"""The context a detector fits in: device, precision, seed, its model folder, labels, progress
and log. The engine (`bench.nn.train`) and every method read it; it sits below both."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.files import atomic_torch_save, load_torch_file
from bench.nn.precision import FP32, Precision


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class FitContext:
    """Where and how a detector trains: device, precision, seed, its model folder, labels,
    progress, log."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    model_dir: Path | None = None
    encoder_model_dir: Path | None = None  # a classical method on features: the encoder's folder
    checkpoint: str = ""  # a trained network to load instead of training (bench/nn/imports.py)
    encoder_checkpoint: str = ""
    checkpoint_sha256: str = ""  # the planned file's: the bytes loaded must be these
    encoder_checkpoint_sha256: str = ""
    labeled: bool = False
    progress: bool | str = True  # True: a bar on a terminal, lines in a log; "lines": lines
    #                              whatever stderr is (workers sharing a terminal); False
    compile: str = ""  # torch.compile's mode for the network ('': eager; in place, so its
    #                    state_dict keys are unchanged)
    precision: Precision = FP32
    log: Callable[[str], None] = _stderr
    on_epoch_end: Callable[[int], None] | None = None

    def cached(self, tag: str, images: torch.Tensor,
               compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Features of `images` under `tag`, kept in the model folder for later score-only runs.

        The file name carries the precision and device type the features were computed with
        (a bf16 bank is not an fp32 one); an unreadable file is computed again.
        """
        if self.model_dir is None:
            return compute()
        digest = hashlib.sha1(images.contiguous().cpu().numpy().tobytes()).hexdigest()[:12]
        how = f"{self.precision.name}-{self.device.type}"
        path = Path(self.model_dir) / f"features-{tag}-{how}-{digest}.pt"
        if path.exists():
            stored = load_torch_file(path)
            if isinstance(stored, dict) and stored and all(
                    isinstance(v, torch.Tensor) for v in stored.values()):
                return {k: v.to(self.device) for k, v in stored.items()}
            self.log(f"bench: warning: {path} is damaged; computing the features again")
        out = compute()
        atomic_torch_save({k: v.cpu() for k, v in out.items()}, path)
        return out
