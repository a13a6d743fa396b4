"""Post-hoc OOD scores as pure functions of penultimate features, logits and a linear head.

Every score here is an *anomaly* score (higher = more likely OOD): the papers' confidence with its
sign flipped. The fits (`fit_*`) read the training set's features once; the scores read a batch.
Formulas and defaults follow the papers and OpenOOD v1.5's postprocessors (docs/methods.md lists
each, and every departure).

    features  [N, d] penultimate activations (after the global pool), float
    logits    [N, C] = features @ W.T + b, the network's class head
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bench.tuning import SettingOutOfRange, Sweep

CHUNK = 1024  # test rows per block of a bank product


def to_cpu(scores: torch.Tensor):
    """A score tensor as a float64 NumPy array."""
    return scores.detach().double().cpu().numpy()


def linear(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return features.float() @ weight.float().t() + bias.float()


# --- logit scores ------------------------------------------------------------------------------

def msp(logits: torch.Tensor) -> torch.Tensor:
    """Minus the maximum softmax probability (Hendrycks & Gimpel 2017)."""
    return -F.softmax(logits.float(), dim=1).max(1).values


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The free energy -T logsumexp(logits / T) (Liu et al. 2020; OpenOOD's EBO)."""
    return -temperature * torch.logsumexp(logits.float() / temperature, dim=1)


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """Minus the maximum logit (Hendrycks et al. 2022; OpenOOD's MLS)."""
    return -logits.float().max(1).values


def gen(logits: torch.Tensor, gamma: float = 0.1, m: int = 100) -> torch.Tensor:
    """Generalized entropy of the M largest probabilities, sum_j p_j^gamma (1 - p_j)^gamma
    (Liu et al. 2023): higher for flatter predictions."""
    p = F.softmax(logits.float(), dim=1)
    top = p.sort(dim=1).values[:, -min(m, p.shape[1]):]
    return (top.pow(gamma) * (1 - top).pow(gamma)).sum(1)


# --- activation shaping, then energy -------------------------------------------------------------

def react_threshold(train_features: torch.Tensor, percentile: float = 90.0) -> float:
    """ReAct's clipping threshold: the `percentile`-th percentile of every training activation,
    interpolated linearly as numpy.percentile (exact at any size, unlike torch.quantile's cap)."""
    flat = train_features.float().flatten()
    position = percentile / 100.0 * (flat.numel() - 1)
    lo, frac = int(position), position - int(position)
    low = flat.kthvalue(lo + 1).values
    if frac == 0:
        return float(low)
    return float(low + frac * (flat.kthvalue(lo + 2).values - low))


def react(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
          threshold: float) -> torch.Tensor:
    """ReAct (Sun et al. 2021): energy of the logits of the activations clipped at `threshold`."""
    return energy(linear(features.float().clamp(max=threshold), weight, bias))


def _top_positions(features: torch.Tensor, percentile: float
                   ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The k largest activations of each row and their positions, k = d - round(d x percentile
    / 100) (ASH's rule)."""
    x = features.float()
    d = x.shape[1]
    k = max(1, d - int(round(d * percentile / 100.0)))
    values, index = x.topk(k, dim=1)
    return values, index, k


def _keep_top(features: torch.Tensor, percentile: float) -> torch.Tensor:
    """The activations with all but the largest (100 - percentile)% of each row set to 0."""
    values, index, _ = _top_positions(features, percentile)
    return torch.zeros_like(features.float()).scatter_(1, index, values)


def ash_s(features: torch.Tensor, percentile: float = 90.0) -> torch.Tensor:
    """ASH-S (Djurisic et al. 2023): prune to the top activations, then scale them by
    exp(s1 / s2), s1 and s2 the row's sums before and after pruning."""
    s1 = features.float().sum(1, keepdim=True)
    kept = _keep_top(features, percentile)
    return kept * torch.exp(s1 / kept.sum(1, keepdim=True))


def ash_b(features: torch.Tensor, percentile: float = 90.0) -> torch.Tensor:
    """ASH-B: prune to the top activations and write s1 / k (the row's sum shared equally) into
    each of the k kept positions, a kept zero too (as the authors' and OpenOOD's ash_b)."""
    x = features.float()
    _, index, k = _top_positions(x, percentile)
    fill = (x.sum(1, keepdim=True) / k).expand(-1, k)
    return torch.zeros_like(x).scatter_(1, index, fill)


def ash_energy(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               percentile: float, binary: bool) -> torch.Tensor:
    shaped = (ash_b if binary else ash_s)(features, percentile)
    return energy(linear(shaped, weight, bias))


# --- feature scores ----------------------------------------------------------------------------

def knn_distance(features: torch.Tensor, bank: torch.Tensor, k: int = 50) -> torch.Tensor:
    """The distance to the k-th nearest training feature, both L2-normalised (Sun et al. 2022,
    "deep nearest neighbours"); `bank` must be normalised already."""
    z = F.normalize(features.float(), dim=1)
    k = min(k, bank.shape[0])
    bank_t = bank.float().t().contiguous()
    out = []
    for part in z.split(CHUNK):
        kth_cos = (part @ bank_t).topk(k, dim=1).values[:, -1]
        out.append((2 - 2 * kth_cos).clamp_min(0).sqrt())
    return torch.cat(out)


@dataclass(frozen=True)
class Gaussians:
    """Class means [C, d] and the precision of one shared covariance [d, d] (float64)."""

    means: torch.Tensor
    precision: torch.Tensor


def fit_tied_gaussians(features: torch.Tensor, labels: torch.Tensor, n_classes: int
                       ) -> Gaussians:
    """Class means and the pseudo-inverse of the covariance of the class-centred features (Lee et
    al. 2018, as scikit-learn's EmpiricalCovariance that their code and OpenOOD's use)."""
    f = features.double()
    means = torch.stack([f[labels == c].mean(0) for c in range(n_classes)])
    centred = f - means[labels]
    cov = centred.t() @ centred / f.shape[0]
    return Gaussians(means, torch.linalg.pinv(cov, hermitian=True))


def squared_mahalanobis(features: torch.Tensor, g: Gaussians) -> torch.Tensor:
    """[N, C] squared Mahalanobis distances to each class mean under the shared covariance,
    in chunks of rows (an N x C x d tensor is gigabytes for CIFAR-100)."""
    out = []
    for part in features.double().split(CHUNK):
        rows = []
        for mu in g.means:
            diff = part - mu
            rows.append(((diff @ g.precision) * diff).sum(1))
        out.append(torch.stack(rows, 1))
    return torch.cat(out)


def mahalanobis(features: torch.Tensor, g: Gaussians) -> torch.Tensor:
    """Min over classes of the squared Mahalanobis distance (Lee et al. 2018; OpenOOD's MDS)."""
    return squared_mahalanobis(features, g).min(1).values


@dataclass(frozen=True)
class RelativeGaussians:
    classes: Gaussians
    background: Gaussians  # one Gaussian of all training features


def fit_rmds(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> RelativeGaussians:
    """RMDS's class Gaussians (shared covariance) and background Gaussian (Ren et al. 2021)."""
    background = fit_tied_gaussians(features, torch.zeros_like(labels), 1)
    return RelativeGaussians(fit_tied_gaussians(features, labels, n_classes), background)


def rmds(features: torch.Tensor, g: RelativeGaussians) -> torch.Tensor:
    """Relative Mahalanobis distance: min over classes of MD_c(x) - MD_0(x), MD_0 the
    background Gaussian's (squared distances, as OpenOOD's RMDS)."""
    return (squared_mahalanobis(features, g.classes)
            - squared_mahalanobis(features, g.background)).min(1).values


@dataclass(frozen=True)
class ViM:
    origin: torch.Tensor  # u = -pinv(W) b
    residual: torch.Tensor  # [d, d - D]: the principal space's complement
    alpha: float


def vim_dim(d: int) -> int:
    """ViM's principal dimension by the authors' rule (haoqiwang/vim, benchmark.py): 1000 for
    features of 2048 dimensions or more, 512 from 768, half the dimension below."""
    return 1000 if d >= 2048 else 512 if d >= 768 else d // 2


def fit_vim(train_features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
            dim: int) -> ViM:
    """ViM's origin, residual space and scale (Wang et al. 2022): eigenvectors of the
    uncentred covariance of (x - u) beyond the `dim` largest eigenvalues; alpha = mean max
    training logit / mean residual norm."""
    x = train_features.double()
    w, b = weight.double(), bias.double()
    u = -torch.linalg.pinv(w) @ b
    centred = x - u
    eigvals, eigvecs = torch.linalg.eigh(centred.t() @ centred / x.shape[0])
    order = eigvals.argsort(descending=True)
    residual = eigvecs[:, order[dim:]]
    vlogit = (centred @ residual).norm(dim=1)
    alpha = float((x @ w.t() + b).max(1).values.mean() / vlogit.mean())
    return ViM(u, residual, alpha)


def vim(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, v: ViM
        ) -> torch.Tensor:
    """Virtual logit minus energy: alpha ||(x - u) R|| - logsumexp(logits)."""
    x = features.double()
    vlogit = ((x - v.origin) @ v.residual).norm(dim=1) * v.alpha
    return vlogit - torch.logsumexp(x @ weight.double().t() + bias.double(), dim=1)


def fit_she(train_features: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor,
            n_classes: int) -> torch.Tensor:
    """SHE's stored patterns (Zhang et al. 2023): per class, the mean feature of the training
    images it classifies correctly (all of the class's images where none is)."""
    f = train_features.float()
    patterns = []
    for c in range(n_classes):
        mask = (labels == c) & (predictions == c)
        patterns.append(f[mask if mask.any() else labels == c].mean(0))
    return torch.stack(patterns)


def she(features: torch.Tensor, logits: torch.Tensor, patterns: torch.Tensor) -> torch.Tensor:
    """Minus the inner product of the features with the pattern of the predicted class (the
    simplified Hopfield energy; OpenOOD's `inner_product` metric)."""
    return -(features.float() * patterns[logits.argmax(1)]).sum(1)


# --- the table: the one place that says which post-hoc scores exist ----------------------------

NEEDS = {
    "features": "penultimate features (every network)",
    "logits": "class logits (a class head, or a user's network that returns them)",
    "head": "the linear class head (W, b) on the penultimate features",
    "labels": "class labels of the training images (a labeled protocol, two classes or more)",
}


@dataclass(frozen=True)
class FitInputs:
    """What a fit reads: the training set's outputs (logits and head None where not offered)."""

    features: torch.Tensor
    labels: torch.Tensor | None
    n_classes: int
    logits: torch.Tensor | None = None
    head: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True)
class Outputs:
    """What a score reads: a test batch's features, logits and the head (None where absent)."""

    features: torch.Tensor
    logits: torch.Tensor | None = None
    head: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True)
class PosthocScore:
    """One post-hoc score: what it needs (NEEDS), its fit on the training outputs (None: no
    fit), its score of a batch, the score-only config fields it reads, and its one-line
    formula with the paper. `sweep`: the grid OpenOOD v1.5's evaluator searches on its
    validation split (its configs/postprocessors/*.yml `postprocessor_sweep`; empty where it
    searches none); `fit_on_validation`: where a search runs, the fit reads the in-distribution
    validation images instead of the training split, as OpenOOD's postprocessor does."""

    needs: frozenset[str]
    score: Callable[[Outputs, Any, Any], torch.Tensor]  # (outputs, fitted state, config)
    fit: Callable[[FitInputs, Any], Any] | None = None  # (inputs, config) -> state
    settings: tuple[str, ...] = ()
    formula: str = ""
    sweep: Sweep = ()
    fit_on_validation: bool = False


def _labels_or_one_class(t: FitInputs) -> tuple[torch.Tensor, int]:
    if t.labels is None:
        return torch.zeros(t.features.shape[0], dtype=torch.long, device=t.features.device), 1
    return t.labels, t.n_classes


def _fit_vim(t: FitInputs, c: Any) -> ViM:
    d = t.features.shape[1]
    if c.vim_dim >= d:
        raise SettingOutOfRange(f"vim_dim {c.vim_dim}: the features have {d} dimensions (ViM's "
                                "principal space must be smaller)")
    return fit_vim(t.features, *t.head, c.vim_dim or vim_dim(d))


def _fit_she(t: FitInputs, c: Any) -> torch.Tensor:
    return fit_she(t.features, t.labels, t.logits.argmax(1), t.n_classes)


_F, _L, _H, _Y = "features", "logits", "head", "labels"
_ASH_SWEEP: Sweep = (("ash_percentile", (65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0)),)

POSTHOC: dict[str, PosthocScore] = {
    "deep-knn": PosthocScore(
        frozenset({_F}), lambda o, s, c: knn_distance(o.features, s, c.knn_k),
        lambda t, c: F.normalize(t.features, dim=1), ("knn_k",),
        "distance to the k-th nearest normalised training feature (Sun et al. 2022)",
        sweep=(("knn_k", (50, 100, 200, 500, 1000)),)),
    "mahalanobis": PosthocScore(
        frozenset({_F}), lambda o, s, c: mahalanobis(o.features, s),
        lambda t, c: fit_tied_gaussians(t.features, *_labels_or_one_class(t)), (),
        "min over classes of the squared Mahalanobis distance, one shared covariance (Lee et "
        "al. 2018); one Gaussian without labels"),
    "rmds": PosthocScore(
        frozenset({_F, _Y}), lambda o, s, c: rmds(o.features, s),
        lambda t, c: fit_rmds(t.features, t.labels, t.n_classes), (),
        "min over classes of MD_c(x) - MD_0(x), MD_0 a Gaussian of all features (Ren et al. "
        "2021)"),
    "msp": PosthocScore(frozenset({_L}), lambda o, s, c: msp(o.logits), formula=(
        "minus the maximum softmax probability (Hendrycks & Gimpel 2017)")),
    "energy": PosthocScore(frozenset({_L}), lambda o, s, c: energy(o.logits), formula=(
        "-logsumexp(logits) (Liu et al. 2020)")),
    "maxlogit": PosthocScore(frozenset({_L}), lambda o, s, c: max_logit(o.logits), formula=(
        "minus the maximum logit (Hendrycks et al. 2022)")),
    "gen": PosthocScore(
        frozenset({_L}), lambda o, s, c: gen(o.logits, c.gen_gamma, c.gen_m),
        settings=("gen_gamma", "gen_m"),
        formula="sum of p^gamma (1 - p)^gamma over the M largest probabilities (Liu et al. 2023)",
        sweep=(("gen_gamma", (0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0)),
               ("gen_m", (10, 50, 100, 200, 500, 1000)))),
    "react": PosthocScore(
        frozenset({_F, _H}), lambda o, s, c: react(o.features, *o.head, s),
        lambda t, c: react_threshold(t.features, c.react_percentile), ("react_percentile",),
        "energy of the head on features clipped at a training percentile (Sun et al. 2021)",
        sweep=(("react_percentile", (85.0, 90.0, 95.0, 99.0)),), fit_on_validation=True),
    "ash-s": PosthocScore(
        frozenset({_F, _H}),
        lambda o, s, c: ash_energy(o.features, *o.head, c.ash_percentile, binary=False),
        settings=("ash_percentile",),
        formula="energy after pruning to the top activations and scaling by exp(s1 / s2) "
                "(Djurisic et al. 2023)", sweep=_ASH_SWEEP),
    "ash-b": PosthocScore(
        frozenset({_F, _H}),
        lambda o, s, c: ash_energy(o.features, *o.head, c.ash_percentile, binary=True),
        settings=("ash_percentile",),
        formula="energy after pruning to the top activations, each kept one set to s1 / k "
                "(Djurisic et al. 2023)", sweep=_ASH_SWEEP),
    "vim": PosthocScore(
        frozenset({_F, _H}), lambda o, s, c: vim(o.features, *o.head, s), _fit_vim,
        ("vim_dim",),
        "alpha x residual norm outside the principal space minus logsumexp (Wang et al. 2022)",
        sweep=(("vim_dim", (256, 1000)),)),
    "she": PosthocScore(
        frozenset({_F, _L, _Y}), lambda o, s, c: she(o.features, o.logits, s), _fit_she, (),
        "minus the inner product with the predicted class's stored pattern (Zhang et al. 2023)"),
}


def applicable(offered: set[str] | frozenset[str], exclude: tuple[str, ...] = ()
               ) -> tuple[str, ...]:
    """The post-hoc scores whose needs `offered` meets, in table order, less `exclude` (a
    method's own scores of the same name)."""
    return tuple(n for n, s in POSTHOC.items() if s.needs <= set(offered) and n not in exclude)


def fit_all(names: tuple[str, ...], inputs: FitInputs, config: Any) -> dict[str, Any]:
    """The fitted state of each named score (None for those without a fit)."""
    return {n: POSTHOC[n].fit(inputs, config) if POSTHOC[n].fit else None for n in names}


def score_all(names: tuple[str, ...], states: dict[str, Any], outputs: Outputs, config: Any,
              configs: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Each named score of a batch (anomaly scores: higher = more OOD); `configs`: a score's
    own config where its settings were chosen for it (a search)."""
    configs = configs or {}
    return {n: POSTHOC[n].score(outputs, states[n], configs.get(n, config)) for n in names}
