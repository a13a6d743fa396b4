"""Trained networks from elsewhere: `bench run --checkpoint PATH` scores a network instead of
training one. Four formats, each read with ``weights_only=True`` and mapped key by key onto
`bench.nn.backbones.Network`:

    bench    model.pt of another run directory: {"model": state dict, "history": [...]}
    mcl      the official MCL code's epoch_N.pt: {"net": SimCLR(torchvision ResNet, 3x3 stem,
             no max-pool) state dict with enc.* and projector.*, "optim", ...}
    csi      the official CSI code's last.model: its ResNet state dict (conv1, bn1, layerS.B,
             linear, simclr_layer, shift_cls_layer, joint_distribution_layer); inputs go
             through its NormalizeLayer
    openood  OpenOOD v1.5's ResNet18_32x32 classifiers (conv1, bn1, layerS.B, fc); inputs
             normalised with its per-data-set mean and std

A file that does not fit the network of the method and data gets one line naming the first key
or shape that differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.errors import BenchError
from bench.nn.backbones import BACKBONES

FORMATS = {"bench": "a model.pt of bench", "mcl": "the official MCL code's checkpoint",
           "csi": "the official CSI code's checkpoint",
           "openood": "an OpenOOD v1.5 ResNet18_32x32 classifier"}
# the method each official format is a network of (ours fits the method that trained it)
METHOD_OF = {"mcl": "mcl", "csi": "csi", "openood": "ce"}
INPUT_NORM = {"mcl": "none", "csi": "csi", "openood": "openood"}
LAYER = re.compile(r"layer(\d+)\.(\d+)\.(.+)")
HEADS = {  # official head prefix -> ours (None: in the file, not part of this network)
    "mcl": {"projector.": "projector."},
    "csi": {"simclr_layer.": "projector.", "shift_cls_layer.": "shift_head.", "linear.": None,
            "joint_distribution_layer.": None},
    "openood": {"fc.": "class_head."},
}


@dataclass(frozen=True)
class Imported:
    """A checkpoint mapped onto our Network: its format, our state dict, and the architecture
    it implies (the config fields to set)."""

    format: str
    state: dict[str, torch.Tensor]
    architecture: dict[str, object]


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def detect(obj: object, path: Path) -> tuple[str, dict]:
    """The format of a loaded checkpoint and its network's state dict."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "history" in obj:
        return "bench", _strip(obj["model"], "_orig_mod.")
    if isinstance(obj, dict) and any(not isinstance(k, str) for k in obj):
        raise BenchError(f"{path}: a checkpoint whose keys are not all names")
    if isinstance(obj, dict) and isinstance(obj.get("net"), dict):
        net = _strip(obj["net"], "module.")
        if any(k.startswith("enc.") for k in net):
            return "mcl", net
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
        state = _strip(state, "module.")
        if "simclr_layer.0.weight" in state and "shift_cls_layer.weight" in state:
            return "csi", state
        if "fc.weight" in state and "conv1.weight" in state:
            return "openood", state
    raise BenchError(f"{path}: not a checkpoint bench reads (formats: "
                     + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()) + ")")


def _official_to_ours(state: dict, fmt: str, path: Path) -> dict[str, torch.Tensor]:
    """conv1/bn1 -> the stem, layerS.B -> the flat block list (downsample -> shortcut), the
    format's heads -> ours."""
    if fmt == "mcl":
        state = {k[4:]: v for k, v in state.items() if k.startswith("enc.")} | {
            k: v for k, v in state.items() if k.startswith("projector.")}
    blocks: dict[int, int] = {}
    for key in state:
        if m := LAYER.match(key):
            blocks[int(m[1])] = max(blocks.get(int(m[1]), 0), int(m[2]) + 1)
    offset = {s: sum(blocks.get(t, 0) for t in range(1, s)) for s in blocks}
    out = {}
    for key, value in state.items():
        if key.startswith("conv1."):
            out["backbone.stem.0." + key[6:]] = value
        elif key.startswith("bn1."):
            out["backbone.stem.1." + key[4:]] = value
        elif m := LAYER.match(key):
            rest = m[3].replace("downsample.", "shortcut.")
            out[f"backbone.layers.{offset[int(m[1])] + int(m[2])}.{rest}"] = value
        elif (head := next((h for h in HEADS[fmt] if key.startswith(h)), None)) is not None:
            if HEADS[fmt][head] is not None:
                out[HEADS[fmt][head] + key[len(head):]] = value
        else:
            raise BenchError(f"{path}: key {key!r} is not part of {FORMATS[fmt]}")
    return out


def architecture(state: dict[str, torch.Tensor], fmt: str, path: Path) -> dict[str, object]:
    """The config fields a state dict in our keys implies: backbone, projection head widths,
    input normalisation (official formats)."""
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("backbone.layers.")})
    widths = []
    for b in blocks:
        conv = state.get(f"backbone.layers.{b}.conv1.weight",
                         state.get(f"backbone.layers.{b}.conv2.weight"))
        if conv is None:
            raise BenchError(f"{path}: block {b} of its ResNet has no convolution weights")
        widths.append(conv.shape[0])
    stages: list[list[int]] = []
    for w in widths:
        if not stages or stages[-1][1] != w:
            stages.append([0, w])
        stages[-1][0] += 1
    key = (tuple(n for n, _ in stages), tuple(w for _, w in stages))
    name = next((n for n, spec in BACKBONES.items() if spec == key), None)
    if name is None:
        raise BenchError(f"{path}: a ResNet of {key[0]} blocks of widths {key[1]}, none of "
                         f"bench's backbones ({', '.join(BACKBONES)})")
    arch: dict[str, object] = {"backbone": name}
    if "projector.0.weight" in state:
        arch["proj_hidden"] = int(state["projector.0.weight"].shape[0])
        arch["proj_dim"] = int(state["projector.2.weight"].shape[0])
    if fmt in INPUT_NORM:
        arch["input_norm"] = INPUT_NORM[fmt]
    return arch


# how torch.save's legacy (pre-1.6) format starts: pickle protocol 2, then its magic number
LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


def load(path: Path | str, what: str = "--checkpoint", sha256: str = "") -> object:
    """A torch file from someone else, loaded safely (`bench.files.load_torch_checked`) from the
    bytes read once: with `sha256`, those bytes must be the planned file's (a file swapped
    after planning fails the job). Every way it can fail is one BenchError naming the file."""
    import hashlib
    import io
    import zipfile

    from bench.files import NotRegularFile, load_torch_checked, read_regular

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise BenchError(f"{what} {path}: no such file")
    try:
        data = read_regular(path, limit=None)
        if sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise BenchError(f"{what} {path}: the file changed since the run was planned (its "
                             "SHA-256 differs from the one in the job id); run again to plan "
                             "with the new file")
        if data.startswith(LEGACY_MAGIC):
            raise BenchError(f"{what} {path}: a torch file of torch before 1.6 (the legacy "
                             "format, whose sizes cannot be checked before loading, is not "
                             "read): load it and save it again with a recent torch.save")
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise BenchError(f"{what} {path}: not a torch file (torch.save writes a zip "
                             "archive; read with weights_only=True)")
        return load_torch_checked(data)
    except NotRegularFile as exc:
        raise BenchError(f"{what} {exc}") from None
    except BenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a foreign pickle fails in many ways
        raise BenchError(f"{what} {path}: not a torch file of tensors and plain containers "
                         f"(read with weights_only=True: a file that needs code to load is "
                         f"refused; {type(exc).__name__})") from None


def check_tensors(state: dict, path: Path | str) -> None:
    """Every value a real floating or integer tensor with finite values: one line naming the
    first key that is not (a string, a complex or NaN weight: never cast, never trained on)."""
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise BenchError(f"{path}: key {key!r} holds {type(value).__name__}, not a tensor")
        if value.is_complex():
            raise BenchError(f"{path}: key {key!r} holds complex numbers; weights are real")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise BenchError(f"{path}: key {key!r} holds NaN or infinite values")


def read(path: Path | str, sha256: str = "") -> Imported:
    """A checkpoint file loaded safely (with `sha256`: only if it is still the planned file),
    its format detected and mapped onto our keys."""
    path = Path(path)
    obj = load(path, sha256=sha256)
    fmt, state = detect(obj, path)
    check_tensors(state, path)
    try:
        if fmt != "bench":
            state = _official_to_ours(state, fmt, path)
        return Imported(fmt, state, architecture(state, fmt, path))
    except BenchError:
        raise
    except (KeyError, ValueError, IndexError, TypeError, AttributeError) as exc:
        raise BenchError(f"{path}: not {FORMATS[fmt]} ({type(exc).__name__}: {exc})") from None


def check_fits(imported: Imported, model: torch.nn.Module, path: Path | str) -> None:
    """BenchError naming the first key or shape that differs between the file and `model`
    (BatchNorm's batch counters may be missing from a file)."""
    ours = model.state_dict()
    for key, value in ours.items():
        if key not in imported.state:
            if key.endswith("num_batches_tracked"):
                continue
            raise BenchError(f"{path} ({FORMATS[imported.format]}) does not fit this network: "
                             f"it has no {key!r} (shape {list(value.shape)})")
        if tuple(imported.state[key].shape) != tuple(value.shape):
            raise BenchError(f"{path} ({FORMATS[imported.format]}) does not fit this network: "
                             f"{key!r} has shape {list(imported.state[key].shape)} in the file, "
                             f"{list(value.shape)} here")
    extra = sorted(set(imported.state) - set(ours))
    if extra:
        raise BenchError(f"{path} ({FORMATS[imported.format]}) does not fit this network: the "
                         f"file has {extra[0]!r}, which this network lacks")


def load_into(imported: Imported, model: torch.nn.Module) -> None:
    ours = model.state_dict()
    state = {k: v for k, v in imported.state.items() if k in ours}
    for key in ours:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = ours[key]
    model.load_state_dict(state)
