"""A trained network of your own, scored with every post-hoc score its outputs allow.

`bench run --network my_pkg.nets:build` (or ``--methods my_pkg.nets:build``) and
`bench.evaluate(model, ...)` take any `torch.nn.Module` (the CLI: a function returning one) that
gives penultimate features and, if it has a class head, logits. It receives float images in
[0, 1], N x C x H x W, at the data set's size (normalise inside the module). One of:

- a `features(x)` method (4-d maps are average-pooled) and `forward(x)` returning logits;
- OpenOOD's convention: `forward(x, return_feature=True)` -> (logits, features);
- `forward(x)` returning features only: the feature scores only.

The linear head (W, b) that ReAct, ASH and ViM need is found as `get_fc()` (OpenOOD), `fc`, or
the last `nn.Linear` from the features' width to the classes, and used only if
features @ W.T + b reproduces the logits. The network is never trained; its weights' SHA-256 is
in the job ids and checked again when a job loads it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import Config, param, score_field
from bench.datasets import ImageSet
from bench.errors import BenchError
from bench.methods.base import Detector, PosthocScoring, to_numpy
from bench.methods.network import LogitScoreConfig
from bench.nn.context import FitContext

PROBE_IMAGES = 4  # images of the shape check


@dataclass(frozen=True)
class ExternalConfig(Config, LogitScoreConfig):
    """A user's trained network: nothing to train, the post-hoc scores' settings."""

    outputs: str = param("", "what the network gives the post-hoc scores (features, logits, "
                             "head), found when the run is planned")
    weights_sha256: str = param("", "SHA-256 of the network's state dict, found when the run "
                                    "is planned and checked when a job loads the network")
    score_batch_size: int = score_field(1024, "images per forward pass when scoring", ge=1)
    posthoc: bool = score_field(True, "the post-hoc scores (off: none, and no rows)")
    knn_k: int = score_field(50, "deep-knn: distance to the k-th nearest training feature",
                             ge=1)


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and values, in order)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        buffer = io.BytesIO()
        np.save(buffer, t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy(),
                allow_pickle=False)
        digest.update(buffer.getvalue())
    return digest.hexdigest()


def _pool(features: torch.Tensor) -> torch.Tensor:
    return features.float().mean((2, 3)) if features.ndim == 4 else features.float()


@dataclass(frozen=True)
class Probe:
    """How a module gives its outputs: the convention, widths, and its head if verified."""

    convention: str  # "features-method", "return_feature", "features-only"
    n_features: int
    n_logits: int  # 0: no logits
    head: tuple[torch.Tensor, torch.Tensor] | None

    @property
    def outputs(self) -> str:
        names = ["features"] + (["logits"] if self.n_logits else []) + (
            ["head"] if self.head is not None else [])
        return ",".join(names)


def _call(module: torch.nn.Module, x: torch.Tensor, convention: str
          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    if convention == "features-method":
        return _pool(module.features(x)), module(x).float()
    if convention == "return_feature":
        logits, features = module(x, return_feature=True)
        return _pool(features), logits.float()
    return _pool(module(x)), None


def _convention(module: torch.nn.Module, x: torch.Tensor, name: str) -> str:
    if callable(getattr(module, "features", None)):
        return "features-method"
    try:
        out = module(x, return_feature=True)
    except TypeError:
        return "features-only"
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return "return_feature"
    raise BenchError(f"network {name}: forward(x, return_feature=True) returned "
                     f"{type(out).__name__}, not (logits, features)")


def _head_candidates(module: torch.nn.Module):
    get_fc = getattr(module, "get_fc", None)
    if callable(get_fc):
        try:
            w, b = get_fc()
            yield torch.as_tensor(np.asarray(w)).float(), torch.as_tensor(np.asarray(b)).float()
        except Exception:  # noqa: BLE001 - a get_fc of another convention: try the rest
            pass
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    fc = getattr(module, "fc", None)
    for layer in ([fc] if isinstance(fc, torch.nn.Linear) else []) + linears[::-1]:
        bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
        yield layer.weight.detach().float(), bias.detach().float()


def probe(module: torch.nn.Module, x: torch.Tensor, name: str) -> Probe:
    """The module's convention and output widths on a float batch; BenchError in one line
    naming the network when its outputs are not [N, d] features and [N, classes] logits."""
    n = x.shape[0]
    from bench.plugins import user_code

    with torch.no_grad(), user_code(f"network {name}: fails on a batch of {tuple(x.shape)} "
                                    "float images in [0, 1]"):
        convention = _convention(module, x, name)
        features, logits = _call(module, x, convention)
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != n:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise BenchError(f"network {name}: features of shape {shape}, expected [{n}, d] (or "
                         f"[{n}, d, h, w] maps)")
    if logits is not None and (logits.ndim != 2 or logits.shape[0] != n or logits.shape[1] < 2):
        raise BenchError(f"network {name}: logits of shape {tuple(logits.shape)}, expected "
                         f"[{n}, classes] with two classes or more")
    if not torch.isfinite(features).all() or (logits is not None
                                               and not torch.isfinite(logits).all()):
        raise BenchError(f"network {name}: outputs that are not finite")
    head = None
    if logits is not None:
        for w, b in _head_candidates(module):
            if w.shape == (logits.shape[1], features.shape[1]) and b.shape == (logits.shape[1],):
                if torch.allclose(features @ w.t() + b, logits, rtol=1e-3, atol=1e-3):
                    head = (w, b)
                    break
    return Probe(convention, features.shape[1], 0 if logits is None else logits.shape[1], head)


class ExternalNetwork(PosthocScoring, Detector):
    """A trained network of yours: its features and logits scored by every post-hoc score
    whose needs they meet; never trained."""

    kind = "network"
    Config = ExternalConfig
    uses_labels = True
    in_default_run = False
    scores: ClassVar[tuple[str, ...]] = ()
    name: ClassVar[str] = ""

    @staticmethod
    def build() -> torch.nn.Module:
        raise NotImplementedError

    @classmethod
    def declared_scores(cls, config: Any, labeled: bool) -> tuple[str, ...]:
        if not config.posthoc:
            return ()
        return cls.posthoc_names(labeled, frozenset(config.outputs.split(",")))

    @classmethod
    def module(cls) -> torch.nn.Module:
        """The user's module, built once per process, in eval mode on the CPU."""
        if "_module" not in cls.__dict__:
            built = cls.build()
            if not isinstance(built, torch.nn.Module):
                raise BenchError(f"network {cls.name}: the builder returned "
                                 f"{type(built).__name__}, not a torch.nn.Module")
            cls._module = built.eval()
        return cls._module

    @classmethod
    def plan(cls, config: ExternalConfig, train: ImageSet) -> ExternalConfig:
        """The config with the network's outputs and weights' hash (the planner calls this
        with the first data set; its images' shape is what the network must take)."""
        module = cls.module()
        x = train.images[:PROBE_IMAGES].float() / 255
        found = probe(module.cpu(), x, cls.name)
        return dataclasses.replace(config, outputs=found.outputs,
                                   weights_sha256=weights_sha256(module))

    def fit(self, train: ImageSet, ctx: FitContext) -> ExternalNetwork:
        c = self.config
        module = type(self).module()
        if c.weights_sha256 and weights_sha256(module) != c.weights_sha256:
            raise BenchError(f"network {self.name}: its weights changed since the run was "
                             "planned (SHA-256 differs); plan the run again")
        self.ctx_ = ctx
        self.module_ = module.to(ctx.device)
        found = probe(self.module_, (train.images[:PROBE_IMAGES].float() / 255).to(ctx.device),
                      self.name)
        if c.outputs and found.outputs != c.outputs:
            raise BenchError(f"network {self.name}: gives {found.outputs}, planned with "
                             f"{c.outputs}")
        self.probe_ = found
        self.outputs = frozenset(found.outputs.split(","))
        self.predicts_classes = found.n_logits > 0
        self.n_classes_ = len(train.classes)
        if c.posthoc:
            self.fit_posthoc(train)
        return self

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        feats, logits = [], []
        with torch.no_grad():
            for part in images.split(self.config.score_batch_size):
                x = part.to(self.ctx_.device).float() / 255
                f, lg = _call(self.module_, x, self.probe_.convention)
                feats.append(f)
                if lg is not None:
                    logits.append(lg)
        return torch.cat(feats), (torch.cat(logits) if logits else None)

    def penultimate(self, images: torch.Tensor) -> torch.Tensor:
        return self._forward(images)[0]

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = self.probe_.head
        return w.to(self.ctx_.device), b.to(self.ctx_.device)

    def posthoc_outputs(self, images: torch.Tensor):
        from bench.nn import posthoc

        features, logits = self._forward(images)
        head = self.linear_head() if self.probe_.head is not None else None
        return posthoc.Outputs(features, logits, head)

    def posthoc_fit_inputs(self, train: ImageSet):
        from bench.nn import posthoc

        n = len(train.classes)
        out = self.posthoc_outputs(train.images)
        labels = train.labels.to(out.features.device) if self.ctx_.labeled else None
        return posthoc.FitInputs(out.features, labels, n if self.ctx_.labeled else 1,
                                 out.logits, out.head)

    def tune(self, id_images: torch.Tensor, ood_images: torch.Tensor) -> dict[str, Any]:
        return self.tune_posthoc(id_images, ood_images) if self.config.posthoc else {}

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        if not self.config.posthoc:
            return {}
        return {k: to_numpy(v) for k, v in self.posthoc_of(images).items()}

    def predict_class(self, images: torch.Tensor) -> np.ndarray:
        logits = self._forward(images)[1]
        return logits.argmax(1).cpu().numpy()

    def embed(self, images: torch.Tensor) -> np.ndarray:
        return to_numpy(F.normalize(self.penultimate(images), dim=1))

    def fit_encoder(self, train: ImageSet, ctx: FitContext) -> ExternalNetwork:
        """As a feature source of a classical method (--features): nothing to train."""
        return self.fit(train, dataclasses.replace(ctx, labeled=False))

    @property
    def backbone(self) -> str:
        return type(self).module().__class__.__name__


def network_class(name: str, builder: Any) -> type[ExternalNetwork]:
    """The detector class of a network builder (a function returning a module, or a module
    class), named `name` in rows and ids."""
    if isinstance(builder, torch.nn.Module):
        module = builder
        builder = lambda: module  # noqa: E731 - an instance: the module itself
    return type(f"Network[{name}]", (ExternalNetwork,),
                {"build": staticmethod(builder), "name": name,
                 "__doc__": f"Your trained network {name}, scored post hoc."})


def evaluate(model: torch.nn.Module, dataset: str = "digits", *, protocol: str = "ood-labeled",
             ood: str | list[str] | None = None, ood_table: str = "bench",
             name: str | None = None, features: str | list[str] | None = None,
             out: str | Path = "runs", seeds: Any = (0,), data_dir: str | Path | None = None,
             download: bool = True, device: str = "auto", **run_args: Any):
    """Score a trained `model` (the module contract above) with every post-hoc score its
    outputs allow on `dataset` under `protocol` (OOD sets: `ood`, else the table's), and with
    any PyOD detector on its features (`features`: detector names, e.g. "knn"); return the
    tidy rows. It runs in this process (the module is not pickled); its weights' hash names
    its jobs, so evaluating the same weights again resumes."""
    from bench import api
    from bench.plugins import PluginEntry
    from bench.registry import METHODS

    if not isinstance(model, torch.nn.Module):
        raise BenchError(f"evaluate: {type(model).__name__} is not a torch.nn.Module")
    digest = weights_sha256(model)
    label = name or f"{type(model).__name__}@{digest[:8]}"
    cls = network_class(label, lambda: model)
    cls._module = model.eval()
    METHODS.register(label, PluginEntry(label, "", "bench.evaluate", f"weights:{digest[:16]}",
                                        obj=cls))
    methods = [label]
    extra = {}
    if features:
        detectors = [features] if isinstance(features, str) else list(features)
        methods += detectors
        extra["features"] = label
    return api.run(methods, dataset, protocol=protocol, ood=ood, ood_table=ood_table, out=out,
                   seeds=seeds, data_dir=data_dir, download=download, device=device,
                   executor="local", workers=1, **extra, **run_args)
