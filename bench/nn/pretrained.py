"""ImageNet-pretrained networks: which weights (torchvision's API, timm, or a local state-dict
file), checked or downloaded checksummed into torch's hub cache, the backbone built behind the
weights' own preprocessing, and its features. The methods on them (`bench/methods/pretrained.py`:
the feature sources, PANDA, MSC) read only their config's `arch`, `weights` and `image_size`.

Inputs are repeated to 3 channels, resized as the weights' own transform (shorter side to the
resize size, centre crop), normalised with its mean and std; the features are the global-pooled
penultimate layer (the classifier replaced by the identity).
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.errors import BenchError, DataMissingError
from bench.nn.augment import to_float
from bench.nn.context import FitContext

TORCHVISION_SUFFIX = "-in1k"
TIMM_PREFIX = "timm-"


class WeightsConfig(Protocol):
    """What the engine reads of a pretrained method's config."""

    arch: str
    weights: str
    image_size: int


@dataclass(frozen=True)
class Weights:
    """Which weights, where, and the transform they were trained with."""

    name: str  # e.g. resnet18-f37072fd.pth, or the local file's name
    sha256: str  # the hash the file name carries (torchvision), or the local file's SHA-256
    source: str  # url, path, "timm" or "none"
    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _torchvision_weights(arch: str):
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except (ValueError, KeyError):
        from torchvision.models import list_models

        from bench.errors import unknown_name

        raise unknown_name("torchvision model", arch, list_models()) from None
    return getattr(enum, "IMAGENET1K_V1", None) or enum.DEFAULT


def _timm(arch: str):
    try:
        import timm
    except ImportError:
        raise BenchError(f"{arch}: timm models need timm (pip install 'mcl-bench[timm]')"
                         ) from None
    return timm


TIMM_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?")  # a model, and a tag after "."


def _timm_model(arch: str, pretrained: bool) -> nn.Module:
    name = arch[len(TIMM_PREFIX):]
    if not TIMM_NAME.fullmatch(name):
        raise BenchError(f"{arch}: not a timm model name (letters, digits and _, a tag after "
                         "'.'), e.g. timm-resnet18 or timm-resnet18.a1_in1k")
    timm = _timm(arch)
    if name.split(".")[0] not in timm.list_models(pretrained=False):  # a tag after "."
        from bench.errors import unknown_name

        raise unknown_name("timm model", name, timm.list_models(pretrained=False))
    return timm.create_model(name, pretrained=pretrained)


def _timm_cached_file(cfg: dict) -> Path | None:
    """The weights file timm downloaded from the Hugging Face hub, if it is in the cache."""
    from huggingface_hub import try_to_load_from_cache

    repo = cfg.get("hf_hub_id")
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename) if repo else None
        if isinstance(found, str):
            return Path(found)
    return None


@functools.lru_cache(maxsize=32)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    from bench.files import sha256_of

    return sha256_of(Path(path))


def file_sha256(path: Path) -> str:
    """A weights file's SHA-256, computed once per (path, modification time, size)."""
    st = path.stat()
    return _sha256(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _timm_cfg(arch: str) -> dict:
    """timm's pretrained config of a model (building the model once per process to read it)."""
    return dict(_timm_model(arch, pretrained=False).pretrained_cfg)


def _published(c: WeightsConfig) -> tuple[str, str, str, int, int, tuple, tuple]:
    """(name, hash, source, resize, crop, mean, std) of the weights the model is published with:
    torchvision's IMAGENET1K_V1 (the hash is the one its file name carries), or timm's default
    (the hash: the cached file's SHA-256, '' until it is downloaded)."""
    if c.arch.startswith(TIMM_PREFIX):
        cfg = _timm_cfg(c.arch)
        crop = cfg["input_size"][-1]
        resize = int(round(crop / cfg.get("crop_pct", 0.875)))
        cached = _timm_cached_file(cfg)
        return (cfg.get("hf_hub_id") or f"timm/{c.arch[len(TIMM_PREFIX):]}",
                file_sha256(cached) if cached else "", "timm", resize, crop,
                tuple(cfg["mean"]), tuple(cfg["std"]))
    w = _torchvision_weights(c.arch)
    t = w.transforms()
    name = w.url.rsplit("/", 1)[1]
    return (name, name.rsplit("-", 1)[-1].split(".")[0], w.url, t.resize_size[0],
            t.crop_size[0], tuple(t.mean), tuple(t.std))


def resolve_weights(c: WeightsConfig, owner: str = "") -> Weights:
    """The weights a config names and their transform (no download); `owner`: the name of the
    method or feature source whose field names the file (for the hint)."""
    owner = owner or (c.arch if c.arch.startswith(TIMM_PREFIX) else c.arch + TORCHVISION_SUFFIX)
    name, sha, source, resize, crop, mean, std = _published(c)
    if c.weights == "none":
        name, sha, source = "random-init", "none", "none"
    elif c.weights:
        path = Path(c.weights).expanduser()
        if not path.is_file():
            what = "not found" if not path.exists() else "not a regular file"
            raise DataMissingError(c.arch, f"{c.arch}: weights file {path} {what} "
                                   f"(--set {owner}.weights=PATH names a state-dict file)")
        name, sha, source = path.name, file_sha256(path), str(path)
    if c.image_size:
        resize, crop = int(round(c.image_size * resize / crop)), c.image_size
    return Weights(name, sha, source, resize, crop, mean, std)


def hub_file(w: Weights) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / w.name


def _check_timm_weights(c: WeightsConfig, download: bool, owner: str) -> None:
    """timm's weights in the Hugging Face cache, or downloaded now; else one line."""
    from huggingface_hub.constants import HF_HUB_CACHE

    cfg = _timm_cfg(c.arch)
    if _timm_cached_file(cfg) is not None:
        return
    where = f"{cfg.get('hf_hub_id') or c.arch} not in {HF_HUB_CACHE}"
    if not download:
        raise DataMissingError(owner, f"{owner}: timm weights {where} and downloads are off "
                               f"(--no-download); run with --download, or --set "
                               f"{owner}.weights=PATH")
    try:
        _timm_model(c.arch, pretrained=True)
    except Exception as exc:  # noqa: BLE001 - no network, no such file: say where it goes
        raise DataMissingError(owner, f"{owner}: timm weights {where} and could not be "
                               f"downloaded ({type(exc).__name__}); --set {owner}.weights=PATH "
                               "names a local file") from None


def check_weights(c: WeightsConfig, download: bool, owner: str) -> Weights:
    """The weights are there (or are downloaded now, checksummed): else one DataMissingError
    saying which file and where it goes; before anything is written."""
    w = resolve_weights(c, owner)
    if w.source == "timm":
        _check_timm_weights(c, download, owner)
        return resolve_weights(c, owner)  # now with the downloaded file's hash
    if w.source.startswith("http") and not hub_file(w).is_file():
        if not download:
            raise DataMissingError(owner, f"{owner}: weights {w.name} not in {hub_file(w).parent} "
                                   f"and downloads are off (--no-download); run with --download, "
                                   f"put {w.source} there, or --set {owner}.weights=PATH")
        try:
            torch.hub.load_state_dict_from_url(w.source, progress=True, check_hash=True)
        except Exception as exc:  # noqa: BLE001 - no network, a bad hash: say where it goes
            raise DataMissingError(owner, f"{owner}: could not download {w.source} ({exc}); put "
                                   f"it in {hub_file(w).parent}, or --set {owner}.weights=PATH"
                                   ) from None
    return w


def _drop_classifier(model: nn.Module) -> nn.Module:
    """The classifier's last linear layer replaced by the identity: what remains (a ConvNeXt's
    norm and flatten, an EfficientNet's dropout; timm's pooling) is the penultimate layer as the
    weights have it."""
    if hasattr(model, "reset_classifier") and hasattr(model, "pretrained_cfg"):  # timm
        model.reset_classifier(0)
        return model
    for attr in ("fc", "heads", "classifier", "head"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
            head[-1] = nn.Identity()
            return model
        if isinstance(head, nn.Module):
            setattr(model, attr, nn.Identity())
            return model
    raise BenchError(f"{type(model).__name__}: no classifier (fc, heads, classifier) to remove")


def check_input_size(c: WeightsConfig, w: Weights, owner: str) -> None:
    """The network takes crops of this size (a ViT's position embeddings fix its own): checked
    on the meta device, so nothing is allocated."""
    with torch.device("meta"):
        model = _network(c).eval()
        try:
            model(torch.zeros(1, 3, w.crop, w.crop))
        except Exception as exc:  # noqa: BLE001 - the model's own message says why
            raise BenchError(f"{owner}: {c.arch} does not take {w.crop}-pixel inputs ({exc}); "
                             f"--set {owner}.image_size=0 keeps its own size") from None


def _classifier_keys(model: nn.Module) -> set[str]:
    """The state-dict keys of the classifier `_drop_classifier` removes."""
    return set(model.state_dict()) - set(_drop_classifier(copy.deepcopy(model)).state_dict())


def _read_state(path: str, mmap: bool = False, sha256: str = "") -> dict[str, torch.Tensor]:
    """A state-dict file; with `sha256`, read once, hashed and loaded from those bytes (a file
    swapped after it was named is refused); every value a finite real tensor."""
    if sha256:
        from bench.nn.imports import load

        state = load(path, "weights", sha256=sha256)
    else:
        from bench.files import check_zip_entries

        check_zip_entries(path, stored=True)  # no bomb, no FIFO, before torch maps it
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BenchError(f"weights {path}: not a state dict ({type(state).__name__})")
    from bench.nn.imports import check_tensors

    check_tensors(state, f"weights {path}")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _check_keys(model: nn.Module, state: dict, path: str) -> None:
    """Every key but the classifier's matches, with its shape (a file of another architecture
    fails naming the keys that differ, instead of loading nothing)."""
    own = model.state_dict()
    missing = set(own) - set(state) - _classifier_keys(model)
    unexpected = set(state) - set(own)
    shapes = sorted(k for k in set(own) & set(state) - _classifier_keys(model)
                    if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        bad = [*sorted(missing)[:2], *sorted(unexpected)[:2], *shapes[:2]]
        raise BenchError(f"weights {path}: not a state dict of {type(model).__name__} "
                         f"({len(missing)} keys missing, {len(unexpected)} unexpected, "
                         f"{len(shapes)} of another shape, e.g. {', '.join(bad)})")


def _network(c: WeightsConfig, pretrained: bool = False) -> nn.Module:
    if c.arch.startswith(TIMM_PREFIX):
        return _timm_model(c.arch, pretrained=pretrained)
    from torchvision.models import get_model

    return get_model(c.arch, weights=None)


def check_weights_file(c: WeightsConfig, w: Weights) -> None:
    """A local weights file fits the network (its keys, memory-mapped; the network on the meta
    device): checked before anything is written."""
    if w.source in ("none", "timm") or w.source.startswith("http"):
        return
    try:
        state = _read_state(w.source, mmap=True)
    except BenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable, not a torch file, unsafe pickle
        raise BenchError(f"weights {w.source}: cannot be read as a state dict "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    with torch.device("meta"):
        _check_keys(_network(c), state, w.source)


def build_backbone(c: WeightsConfig, w: Weights) -> nn.Module:
    """The network with its weights loaded and its classifier replaced by the identity."""
    model = _network(c, pretrained=w.source == "timm")
    if w.source.startswith("http"):
        model.load_state_dict(torch.hub.load_state_dict_from_url(
            w.source, progress=True, check_hash=True, weights_only=True))
    elif w.source not in ("none", "timm"):
        state = _read_state(w.source, sha256=w.sha256)
        _check_keys(model, state, w.source)
        model.load_state_dict(state, strict=False)  # all but the classifier, checked above
    return _drop_classifier(model)


def _to_8_bits(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] values rounded to the nearest of 256 levels, halves up (PIL's fixed point)."""
    return torch.floor(x * 255 + 0.5).clamp_(0, 255) / 255


def pil_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a float batch in [0, 1] as PIL resizes an 8-bit image (torchvision's
    Resize on a PIL image, which the pretrained baselines' code uses): the width first, then the
    height, each pass antialiased and rounded to 8 bits. Equal to PIL's output in more than 99%
    of pixels, the rest one level apart (its fixed-point weights; tests/test_pretrained.py)."""
    h = x.shape[2]
    wide = _to_8_bits(F.interpolate(x.float(), size=(h, size[1]), mode="bilinear",
                                    antialias=True, align_corners=False))
    return _to_8_bits(F.interpolate(wide, size=size, mode="bilinear", antialias=True,
                                    align_corners=False))


class PretrainedNet(nn.Module):
    """The backbone behind the weights' own preprocessing: 3 channels, resize, centre crop,
    normalisation. `prepare` resizes (augmentations run before or after it); `forward`
    normalises and embeds. BatchNorm stays in eval mode even while training, as PANDA's and
    MSC's code train (they never call model.train())."""

    def __init__(self, backbone: nn.Module, w: Weights):
        super().__init__()
        self.backbone, self.resize, self.crop = backbone, w.resize, w.crop
        self.register_buffer("mean", torch.tensor(w.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(w.std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("center", torch.zeros(0))  # PANDA's and MSC's: kept with the model

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """The centre takes the saved one's size (it is set when training starts)."""
        saved = state_dict.get(prefix + "center")
        if saved is not None:
            self.center = torch.empty(saved.shape, dtype=saved.dtype, device=self.center.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True) -> PretrainedNet:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def prepare(self, x: torch.Tensor, centre_crop: bool = True) -> torch.Tensor:
        """3 channels at the network's resolution: the shorter side resized and the centre
        cropped (the test transform), or resized straight to the crop (a random-crop view's
        RandomResizedCrop); resized as PIL does in PANDA's, MSC's and DN2's code."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if not centre_crop:
            return pil_resize(x, (self.crop, self.crop))
        h, w = x.shape[2:]
        scale = self.resize / min(h, w)
        size = (max(self.crop, round(h * scale)), max(self.crop, round(w * scale)))
        x = pil_resize(x, size)
        top, left = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        return x[:, :, top:top + self.crop, left:left + self.crop]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return {"features": self.backbone(x).flatten(1)}


def forward_features(net: PretrainedNet, images: torch.Tensor, ctx: FitContext,
                     batch_size: int) -> torch.Tensor:
    """The network's features of uint8 images, in batches at its resolution."""
    from bench.nn import train as engine

    return engine.batched_forward(net, images, lambda u8: net.prepare(to_float(u8)), batch_size,
                                  ctx.device, ("features",), progress=ctx.progress,
                                  precision=ctx.precision)["features"]
