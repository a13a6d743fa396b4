"""Each post-hoc score on tiny tensors against a value worked out by hand from its paper's
formula (anomaly scores: higher = more OOD)."""

import math

import numpy as np
import pytest
import torch

from bench.nn import posthoc as ph

E = math.exp


def test_msp_energy_and_max_logit():
    logits = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    assert ph.msp(logits).tolist() == pytest.approx([-E(2) / (E(2) + 1), -0.5])
    assert ph.energy(logits).tolist() == pytest.approx([-math.log(E(2) + 1), -math.log(2 * E(1))])
    assert ph.max_logit(logits).tolist() == pytest.approx([-2.0, -1.0])


def test_gen_sums_the_top_m_probabilities():
    flat = torch.zeros(1, 2)  # p = (0.5, 0.5): each term 0.5^0.1 x 0.5^0.1
    assert ph.gen(flat, gamma=0.1, m=100).item() == pytest.approx(2 * 0.5 ** 0.2)
    assert ph.gen(flat, gamma=0.1, m=1).item() == pytest.approx(0.5 ** 0.2)
    sure = torch.tensor([[20.0, 0.0]])
    assert ph.gen(sure).item() < ph.gen(flat).item()  # confident -> less OOD


def test_react_clips_then_takes_the_energy():
    assert ph.react_threshold(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), 50) == pytest.approx(2.5)
    assert ph.react_threshold(torch.arange(101.0).view(1, -1), 90) == pytest.approx(
        np.percentile(np.arange(101.0), 90))
    w, b = torch.eye(2), torch.zeros(2)
    got = ph.react(torch.tensor([[1.0, 5.0]]), w, b, threshold=2.0)  # -> logits (1, 2)
    assert got.item() == pytest.approx(-math.log(E(1) + E(2)))


def test_ash_s_and_ash_b_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # percentile 50: k = 4 - round(2) = 2 kept
    scale = E(10 / 7)  # s1 = 10 before pruning, s2 = 7 after
    assert ph.ash_s(x, 50).tolist()[0] == pytest.approx([0, 0, 3 * scale, 4 * scale])
    assert ph.ash_b(x, 50).tolist()[0] == pytest.approx([0, 0, 5, 5])  # s1 / k
    w, b = torch.eye(4), torch.zeros(4)
    assert ph.ash_energy(x, w, b, 50, binary=True).item() == pytest.approx(
        -math.log(2 + 2 * E(5)))


def test_ash_b_fills_every_kept_position_a_kept_zero_too():
    # percentile 50 of 4: k = 2 kept, but one non-zero only: s1 / k = 2 goes into both kept
    # positions (the authors' and OpenOOD's ash_b), not 2 into one and 0 into the other
    got = ph.ash_b(torch.tensor([[0.0, 0.0, 0.0, 4.0]]), 50)[0]
    assert got[3].item() == 2.0 and sorted(got.tolist()) == [0, 0, 2, 2]


def _openood_ash_b(x, percentile):
    """OpenOOD v1.5's openood/networks/ash_net.py ash_b, transcribed (4-d input, in place)."""
    b, c, h, w = x.shape
    s1 = x.sum(dim=[1, 2, 3])
    n = x.shape[1:].numel()
    k = n - int(np.round(n * percentile / 100.0))
    t = x.view((b, c * h * w))
    v, i = torch.topk(t, k, dim=1)
    fill = (s1 / k).unsqueeze(dim=1).expand(v.shape)
    t.zero_().scatter_(dim=1, index=i, src=fill)
    return x


def test_ash_b_equals_openoods_on_sparse_relu_features():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(64, 40, generator=g) - 1.5)  # most rows: fewer than k non-zeros
    assert ((x > 0).sum(1) < 4).any()
    for p in (65, 90, 95):
        want = _openood_ash_b(x.clone().view(64, 40, 1, 1), p).view(64, 40)
        assert torch.equal(ph.ash_b(x, p), want)


def test_knn_is_the_kth_nearest_normalised_distance():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[2.0, 0.0]])
    assert ph.knn_distance(x, bank, k=1).item() == pytest.approx(0.0, abs=1e-6)
    assert ph.knn_distance(x, bank, k=2).item() == pytest.approx(math.sqrt(2))
    assert ph.knn_distance(x, bank, k=50).item() == pytest.approx(math.sqrt(2))  # k capped


def _two_classes():
    # 1-d features: class 0 at 0 and 2 (mean 1), class 1 at 10 and 12 (mean 11); the
    # class-centred values are -1, 1, -1, 1: shared variance 1
    return torch.tensor([[0.0], [2.0], [10.0], [12.0]]), torch.tensor([0, 0, 1, 1])


def test_mahalanobis_and_rmds_by_hand():
    f, y = _two_classes()
    g = ph.fit_tied_gaussians(f, y, 2)
    x = torch.tensor([[3.0]])
    assert ph.mahalanobis(x, g).item() == pytest.approx(4.0)  # min((3-1)^2, (3-11)^2)
    r = ph.fit_rmds(f, y, 2)
    # background: mean 6, variance (36 + 16 + 16 + 36) / 4 = 26, so MD_0(3) = 9 / 26
    assert ph.rmds(x, r).item() == pytest.approx(4.0 - 9 / 26)


def test_vim_by_hand():
    # W = I, b = 0: origin 0; covariance diag(2, 0.5); principal dim 1 -> residual axis 2;
    # training residual norms 0, 1, 0, 1 (mean 0.5), max logits 2, 1, 0, 0 (mean 0.75): alpha 1.5
    w, b = torch.eye(2), torch.zeros(2)
    train = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [0.0, -1.0]])
    v = ph.fit_vim(train, w, b, dim=1)
    assert v.alpha == pytest.approx(1.5)
    got = ph.vim(torch.tensor([[1.0, 1.0]]), w, b, v)  # 1.5 x 1 - logsumexp(1, 1)
    assert got.item() == pytest.approx(1.5 - (1 + math.log(2)))


def test_she_uses_the_correctly_classified_mean_of_the_predicted_class():
    train = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    labels, preds = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1])
    patterns = ph.fit_she(train, labels, preds, 2)
    assert patterns.tolist() == [[1.0, 0.0], [0.0, 2.0]]  # image 1 was misclassified
    x, logits = torch.tensor([[2.0, 1.0]]), torch.tensor([[0.1, 0.9]])
    assert ph.she(x, logits, patterns).item() == pytest.approx(-2.0)


def test_vim_dimension_by_the_authors_rule():
    assert [ph.vim_dim(d) for d in (64, 512, 768, 2048)] == [32, 256, 512, 1000]
