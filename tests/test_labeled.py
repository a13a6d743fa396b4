import numpy as np
import pytest
import torch

from bench.datasets import load_dataset
from bench.methods import mcl as mcl_module
from bench.methods.supervised import odin_score
from bench.nn import posthoc
from bench.nn.context import FitContext
from helpers import tiny


def _softmax(a):
    e = np.exp(a - a.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_msp_and_energy_match_numpy():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    t = torch.tensor(logits)
    assert posthoc.msp(t).numpy() == pytest.approx(-_softmax(logits).max(1))
    lse = np.log(np.exp(logits).sum(1))
    assert posthoc.energy(t).numpy() == pytest.approx(-lse)


def test_odin_matches_the_closed_form_on_a_linear_model():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 4))
    x = rng.normal(size=(5, 4))
    T, eps = 10.0, 0.01
    got = odin_score(lambda v: v @ torch.tensor(W).t(), torch.tensor(x), T, eps).numpy()
    for i in range(5):
        p = _softmax((x[i:i + 1] @ W.T) / T)[0]
        k = int(np.argmax(p))
        grad = (W[k] - p @ W) / T  # d/dx log softmax_k(Wx / T)
        xp = x[i] + eps * np.sign(grad)
        assert got[i] == pytest.approx(-_softmax((xp[None] @ W.T) / T).max(), rel=1e-6)


def test_mahalanobis_with_shared_covariance_matches_numpy():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(40, 3))
    y = np.repeat([0, 1], 20)
    f[y == 1] += 2.0
    test = rng.normal(size=(6, 3))
    g = posthoc.fit_tied_gaussians(torch.tensor(f), torch.tensor(y), 2)
    got = posthoc.mahalanobis(torch.tensor(test), g).numpy()
    mu = np.stack([f[y == c].mean(0) for c in range(2)])
    centred = f - mu[y]
    P = np.linalg.pinv(centred.T @ centred / len(f))
    expected = [min((t - m) @ P @ (t - m) for m in mu) for t in test]
    assert got == pytest.approx(expected, rel=1e-6)


def test_labeled_mcl_uses_class_plus_c_times_rotation(monkeypatch):
    seen = {}

    def capture(z1, z2, classes, shifts, **weights):
        seen["classes"], seen["shifts"] = classes.clone(), shifts.clone()
        return (z1 * 0).sum()

    monkeypatch.setattr(mcl_module, "masked_contrastive_loss", capture)
    monkeypatch.setattr(mcl_module, "stochastic_positive_attraction_loss", capture)
    train = load_dataset("synthetic", "train")
    det = tiny("mcl", epochs=1, batch_size=8)
    det.ctx_ = FitContext(labeled=True)
    det.n_classes_ = len(train.classes)
    det.model_ = det.build_model(train)
    y = train.labels[:8]
    det.training_loss(train.images[:8], y)
    assert torch.equal(seen["classes"], y.repeat(4))
    assert torch.equal(seen["shifts"], torch.arange(4).repeat_interleave(8))
    det.ctx_ = FitContext(labeled=False)  # one-class: the rotation is the pseudo-class
    det.training_loss(train.images[:8], y)
    assert torch.equal(seen["classes"], torch.arange(4).repeat_interleave(8))
    assert (seen["shifts"] == 0).all()
    single = tiny("mcl", epochs=1, batch_size=8, pseudo_class="single")
    single.ctx_, single.n_classes_, single.model_ = det.ctx_, det.n_classes_, det.model_
    single.training_loss(train.images[:8], y)  # one class: other rotations weigh beta
    assert (seen["classes"] == 0).all()
    assert torch.equal(seen["shifts"], torch.arange(4).repeat_interleave(8))


def test_sei_predicts_the_class_of_the_nearest_gaussians():
    det = tiny("mcl", sei_views=4, sei_combine="wa")
    C, d = 3, 4
    det.n_joint_classes_ = C
    centres = torch.eye(d)[:C] * 3  # class c has its mean at 3 e_c under every rotation
    det.means_ = centres.repeat(4, 1).double()  # joint label c + C k
    det.whiteners_ = torch.eye(d, dtype=torch.float64).repeat(4 * C, 1, 1)  # identity precision
    target = torch.tensor([2, 0, 1])
    offset = torch.zeros(d)
    offset[3] = 1.0  # a direction no class mean uses: distance to the own mean = 0.1 (k + 1)
    z_views = torch.stack([centres[target] + 0.1 * (k + 1) * offset for k in range(4)])
    import bench.methods.mcl as m

    orig = m.F.normalize
    m.F.normalize = lambda z, dim=1: z  # keep the hand-made points as they are
    try:
        score, pred = det._sei(None, z_views, [0, 1, 2, 3])
    finally:
        m.F.normalize = orig
    assert pred.tolist() == target.tolist()
    harmonic = 4 / sum(1 / (0.1 * (k + 1)) for k in range(4))
    assert score.numpy() == pytest.approx(np.full(3, harmonic), rel=1e-6)


def test_labeled_detectors_report_accuracy_above_chance():
    train, test = load_dataset("synthetic", "train"), load_dataset("synthetic", "test")
    det = tiny("ce", epochs=8, lr=0.05).fit(train, FitContext(labeled=True, progress=False))
    accuracy = (det.predict_class(test.images) == test.labels.numpy()).mean()
    assert accuracy > 0.5  # four classes: chance is 0.25
