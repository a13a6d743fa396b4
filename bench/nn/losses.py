"""Contrastive losses as pure functions of projections and labels.

Convention: z1 and z2 are the [N, d] projections of the two views of N (shifted) images; rows i of
z1 and z2 are a positive pair. Projections are L2-normalised inside each loss. Every loss averages
over the 2N anchors (both views).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.nn.precision import fp32_region

MASKED = -1e9  # logit of the anchor itself: excluded from every softmax
JOINT_STRIDE = 1 << 16  # joint label = class * stride + shift (shift < stride)


def _cosines(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Cosines of every pair of the 2N views, in fp32 even inside autocast (a `.float()` alone
    would not stop autocast from running the matmul in bf16: cosines to ~0.004, logits / tau to
    ~0.06)."""
    with fp32_region(z1):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        return z @ z.t()


def _partner_mask(n: int, device: torch.device) -> torch.Tensor:
    """2N x 2N, True at (a, other view of a)."""
    return torch.eye(2 * n, dtype=torch.bool, device=device).roll(n, dims=1)


def _partner_index(n: int, device: torch.device) -> torch.Tensor:
    """Index of the other view of each of the 2N views."""
    idx = torch.arange(2 * n, device=device)
    return (idx + n) % (2 * n)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: softmax over the 2N - 1 other views, the other view is the positive."""
    n = z1.shape[0]
    logits = _cosines(z1, z2) / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=logits.device), MASKED)
    return F.cross_entropy(logits, _partner_index(n, logits.device))


def mcl_pair_weights(class_labels: torch.Tensor, shift_labels: torch.Tensor, *,
                     temperature: float, alpha: float, beta: float) -> torch.Tensor:
    """CCM's weight w_ab for every pair of the 2N views (2N x 2N, diagonal unused).

    1/tau for the positive (other view of the same shifted image) and for pairs of different
    classes; beta for the same class at a different rotation; alpha for the same class at the
    same rotation (another image: nearly no repulsion).
    """
    c = torch.cat([class_labels, class_labels])
    s = torch.cat([shift_labels, shift_labels])
    same_class = c[:, None] == c[None, :]
    same_shift = s[:, None] == s[None, :]
    inv_tau = 1.0 / temperature
    w = torch.where(same_class, torch.where(same_shift, alpha, beta), inv_tau)
    return torch.where(_partner_mask(class_labels.shape[0], c.device), inv_tau, w).float()


def _weighted_logits(z1, z2, weights, clamp_negative: bool) -> torch.Tensor:
    s = _cosines(z1, z2)
    if clamp_negative:  # official MCL code: cosines clamped below at 1e-7 before weighting
        s = s.clamp(min=1e-7)
    logits = weights * s
    eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    return logits.masked_fill(eye, MASKED)


def masked_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, class_labels: torch.Tensor,
                            shift_labels: torch.Tensor, *, temperature: float, alpha: float,
                            beta: float, clamp_negative: bool) -> torch.Tensor:
    """MCL's class-conditional mask (CCM) loss: NT-Xent whose pair logits are w_ab * cos_ab."""
    w = mcl_pair_weights(class_labels, shift_labels, temperature=temperature, alpha=alpha,
                         beta=beta)
    logits = _weighted_logits(z1, z2, w, clamp_negative)
    return F.cross_entropy(logits, _partner_index(z1.shape[0], logits.device))


def draw_partners(joint_labels: torch.Tensor, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image a uniformly random *other* image with the same joint label.

    Returns (partner index [N], has_partner bool [N]); images alone with their label get
    has_partner False (their partner index is meaningless).
    """
    n = joint_labels.shape[0]
    same = joint_labels[:, None] == joint_labels[None, :]
    same.fill_diagonal_(False)
    u = torch.rand(n, n, device=joint_labels.device, generator=generator)
    u = torch.where(same, u, torch.full_like(u, -1.0))
    return u.argmax(1), same.any(1)


def stochastic_positive_attraction_loss(
    z1: torch.Tensor, z2: torch.Tensor, class_labels: torch.Tensor, shift_labels: torch.Tensor,
    *, temperature: float, alpha: float, beta: float, clamp_negative: bool,
    partners: tuple[torch.Tensor, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MCL's SPA loss: each view is pulled towards the same view of a random same-label image.

    Weights as in CCM, except that the anchor's own partner view gets w = 0 (it stays in the
    softmax with logit 0, as in the official code) and the target view gets 1/tau. Images with
    no same-label partner in the batch are left out; with none at all the loss is 0.
    ``partners`` (index, has_partner) may be given; otherwise they are drawn with `generator`.
    """
    n = z1.shape[0]
    joint = class_labels * JOINT_STRIDE + shift_labels
    partner, has = partners if partners is not None else draw_partners(joint, generator)
    target = torch.cat([partner, partner + n])  # view 1 -> view 1 of p(i), view 2 -> view 2
    w = mcl_pair_weights(class_labels, shift_labels, temperature=temperature, alpha=alpha,
                         beta=beta)
    w = torch.where(_partner_mask(n, z1.device), 0.0, w)
    w = torch.where(F.one_hot(target, 2 * n).bool(), 1.0 / temperature, w)
    logits = _weighted_logits(z1, z2, w, clamp_negative)
    keep = torch.cat([has, has]).float()
    per_view = F.cross_entropy(logits, target, reduction="none")
    return (per_view * keep).sum() / keep.sum().clamp_min(1.0)  # no host sync: 0 if none kept


def supervised_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, *,
                                temperature: float) -> torch.Tensor:
    """SupCon (Khosla et al. 2020, L_out): mean log-likelihood of every same-label view."""
    n = z1.shape[0]
    logits = _cosines(z1, z2) / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(eye, MASKED)
    y = torch.cat([labels, labels])
    positive = (y[:, None] == y[None, :]) & ~eye
    log_prob = F.log_softmax(logits, dim=1)
    per_anchor = (log_prob * positive).sum(1) / positive.sum(1).clamp_min(1)
    return -per_anchor.mean()


def compactness_loss(features: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """PANDA's compactness loss: mean over the batch of ||f - c||^2 / d (the official code's
    CompactnessLoss, the features unnormalised)."""
    f = features.float()
    return (f - center).square().sum(1).div(f.shape[1]).mean()


def mean_shifted_contrastive_loss(f1: torch.Tensor, f2: torch.Tensor, center: torch.Tensor, *,
                                  temperature: float, angular: bool) -> torch.Tensor:
    """MSC's loss (Reiss & Hoshen 2023): NT-Xent of the two views' unit features shifted by the
    normal images' unit mean `center` (renormalised inside), plus, with `angular`, the squared
    norms of the shifted features (the angular centre loss, the official code's --angular)."""
    s1, s2 = f1.float() - center, f2.float() - center
    loss = nt_xent(s1, s2, temperature=temperature)
    if angular:
        loss = loss + s1.square().sum(1).mean() + s2.square().sum(1).mean()
    return loss
