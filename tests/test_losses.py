import math

import pytest
import torch

from bench.nn.losses import (
    draw_partners,
    masked_contrastive_loss,
    mcl_pair_weights,
    nt_xent,
    stochastic_positive_attraction_loss,
    supervised_contrastive_loss,
)


def test_nt_xent_hand_worked():
    # views a0=(1,0) a1=(0,1) a2=(1,0) a3=(0,1): each anchor sees its positive at cos 1 and two
    # negatives at cos 0 -> loss = -log(e^(1/T) / (e^(1/T) + 2))
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    for t in (1.0, 0.5):
        expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
        assert nt_xent(z, z.clone(), temperature=t).item() == pytest.approx(expected, rel=1e-6)


def test_ccm_pair_weights_hand_worked():
    t, a, b = 0.2, 0.05, 2.0
    classes = torch.tensor([0, 0, 1, 0])
    shifts = torch.tensor([0, 1, 0, 0])
    w = mcl_pair_weights(classes, shifts, temperature=t, alpha=a, beta=b)
    # anchor 0 (class 0, rot 0) against views 1..7 (view 4 is its own positive)
    assert w[0, 1:].tolist() == pytest.approx([b, 1 / t, a, 1 / t, b, 1 / t, a])
    # anchor 5 = view 2 of image 1 (class 0, rot 1): image 0 and 3 are other rotations
    assert w[5, [0, 1, 2, 3]].tolist() == pytest.approx([b, 1 / t, 1 / t, b])


def test_ccm_loss_hand_worked_with_identical_projections():
    # all cosines 1: anchor loss = -log(e^(w_pos) / sum_b e^(w_b)) from the weights above
    t, a, b = 0.2, 0.05, 2.0
    classes, shifts = torch.tensor([0, 0, 1, 0]), torch.tensor([0, 1, 0, 0])
    z = torch.ones(4, 3)
    e = math.exp
    per_anchor = {
        0: [b, 1 / t, a, 1 / t, b, 1 / t, a],  # images 0 and 3 (class 0, rot 0)
        1: [b, 1 / t, b, 1 / t, b, 1 / t, b],  # image 1 (class 0, rot 1)
        2: [1 / t, 1 / t, 1 / t, 1 / t, 1 / t, 1 / t, 1 / t],  # image 2 (the only class 1)
    }
    per_anchor[3] = per_anchor[0]
    expected = sum(-math.log(e(1 / t) / sum(e(x) for x in per_anchor[i])) for i in range(4)) / 4
    got = masked_contrastive_loss(z, z.clone(), classes, shifts, temperature=t, alpha=a, beta=b,
                                  clamp_negative=True)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_ccm_equals_nt_xent_when_alpha_beta_are_one_over_tau():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g)
    classes = torch.randint(0, 3, (12,), generator=g)
    shifts = torch.randint(0, 4, (12,), generator=g)
    t = 0.3
    ccm = masked_contrastive_loss(z1, z2, classes, shifts, temperature=t, alpha=1 / t, beta=1 / t,
                                  clamp_negative=False)
    assert ccm.item() == pytest.approx(nt_xent(z1, z2, temperature=t).item(), rel=1e-6)


def test_clamp_negative_removes_negative_similarities():
    z1 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    z2 = z1.clone()
    labels = torch.tensor([0, 1])
    shifts = torch.tensor([0, 0])
    ones = dict(temperature=1.0, alpha=1.0, beta=1.0)
    clamped = masked_contrastive_loss(z1, z2, labels, shifts, **ones, clamp_negative=True)
    plain = masked_contrastive_loss(z1, z2, labels, shifts, **ones, clamp_negative=False)
    # clamped: the two cos = -1 negatives count as exp(~0) = 1 instead of exp(-1)
    assert clamped.item() == pytest.approx(-math.log(math.e / (math.e + 2)), rel=1e-5)
    assert plain.item() == pytest.approx(-math.log(math.e / (math.e + 2 / math.e)), rel=1e-5)


def test_spa_targets_hand_worked():
    # images 0 and 1 share a label, image 2 is alone (left out). Identical projections: anchor
    # view logits are w (cos 1): own partner view gets 0, the target 1/T, the rest CCM weights.
    t, a, b = 0.5, 0.05, 2.0
    classes, shifts = torch.tensor([0, 0, 0]), torch.tensor([0, 0, 1])
    z = torch.ones(3, 2)
    partners = (torch.tensor([1, 0, 0]), torch.tensor([True, True, False]))
    got = stochastic_positive_attraction_loss(z, z.clone(), classes, shifts, temperature=t,
                                              alpha=a, beta=b, clamp_negative=True,
                                              partners=partners)
    e = math.exp
    # anchor 0 (view 1 of image 0): others are v1 img1 (target, 1/T), v1 img2 (beta),
    # v2 img0 (own partner, 0), v2 img1 (alpha), v2 img2 (beta)
    denominator = e(1 / t) + e(b) + e(0) + e(a) + e(b)
    expected = -math.log(e(1 / t) / denominator)  # all four kept anchors are alike
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_spa_without_partners_is_zero_and_differentiable():
    z1 = torch.randn(3, 4, requires_grad=True)
    got = stochastic_positive_attraction_loss(z1, z1 * 2, torch.tensor([0, 1, 2]),
                                              torch.tensor([0, 0, 0]), temperature=0.2, alpha=0.05,
                                              beta=2.0, clamp_negative=True)
    assert got.item() == 0.0
    got.backward()


def test_draw_partners_picks_another_image_with_the_same_label():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    g = torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(50):
        partner, has = draw_partners(labels, g)
        assert has.tolist() == [True, True, True, True, True, False]
        for i in range(5):
            assert partner[i] != i and labels[partner[i]] == labels[i]
        seen.add(int(partner[0]))
    assert seen == {1, 2}  # both candidates get drawn


def test_supervised_contrastive_hand_worked():
    # two images of one class, identical projections, T=1: each anchor has 3 positives among 3
    # others, all at cos 1 -> log-prob of each = -log 3
    z = torch.ones(2, 3)
    assert supervised_contrastive_loss(z, z.clone(), torch.tensor([0, 0]), temperature=1.0).item() == \
        pytest.approx(math.log(3), rel=1e-6)
