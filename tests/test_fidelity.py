"""The paper preset trains as the official code: torchlars' LARS, CSI's warm-up + cosine schedule,
MCL's initialisation and SEI's Gaussian fit, each against a small transcription of the rule."""

import math

import pytest
import torch

from bench.nn.backbones import Network, build_backbone
from bench.nn.optim import LARS, csi_factor
from bench.nn.scoring import fit_gaussians


def _torchlars_sgd(params, grads_per_step, lr, momentum, wd, trust=1e-3, eps=1e-8):
    """torchlars' LARS around SGD, written out: per parameter with a gradient, adaptive =
    trust * ||w|| / (||g|| + wd * ||w|| + eps) (1 if a norm is 0); g <- (g + wd * w) * adaptive;
    then SGD with momentum and its weight decay switched off."""
    params = [p.clone() for p in params]
    bufs = [None] * len(params)
    for grads in grads_per_step:
        for i, (p, g) in enumerate(zip(params, grads)):
            w_norm, g_norm = float(p.norm()), float(g.norm())
            adaptive = trust * w_norm / (g_norm + wd * w_norm + eps) if w_norm > 0 and g_norm > 0 \
                else 1.0
            d = (g + wd * p) * adaptive
            bufs[i] = d.clone() if bufs[i] is None else momentum * bufs[i] + d
            params[i] = p - lr * bufs[i]
    return params


def test_lars_matches_torchlars_over_several_steps():
    torch.manual_seed(0)
    shapes = [(8, 3, 3, 3), (8,), (8,), (4, 8)]  # a conv weight, BatchNorm weight and bias, linear
    start = [torch.randn(s) for s in shapes]
    start[2] = torch.zeros(8)  # a zero parameter: adaptive rate 1, as torchlars
    steps = [[torch.randn(s) for s in shapes] for _ in range(5)]
    steps[1][3] = torch.zeros(4, 8)  # a zero gradient: adaptive rate 1
    params = [torch.nn.Parameter(p.clone()) for p in start]
    opt = LARS(params, lr=0.5, momentum=0.9, weight_decay=1e-4)
    for grads in steps:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
    expected = _torchlars_sgd(start, steps, lr=0.5, momentum=0.9, wd=1e-4)
    for got, want in zip(params, expected):
        assert torch.allclose(got.detach(), want, atol=1e-6, rtol=0)


def test_lars_torchlars_worked_value():
    """torchlars' own test: ||w|| 1.234, ||g|| 5.678, wd 1e-4 -> adaptive 0.000217325."""
    w = torch.nn.Parameter(torch.tensor([1.234]))
    w.grad = torch.tensor([5.678])
    LARS([w], lr=1.0, momentum=0.0, weight_decay=1e-4).step()
    step = (5.678 + 1e-4 * 1.234) * 0.001 * 1.234 / (5.678 + 1e-4 * 1.234 + 1e-8)
    assert 0.001 * 1.234 / (5.678 + 1e-4 * 1.234 + 1e-8) == pytest.approx(0.000217325, rel=1e-5)
    assert float(w.detach()) == pytest.approx(1.234 - step, abs=1e-7)


def test_lars_exclude_1d_leaves_biases_plain():
    w = torch.nn.Parameter(torch.tensor([2.0, 0.0]))
    w.grad = torch.tensor([1.0, 1.0])
    LARS([w], lr=0.1, momentum=0.0, weight_decay=0.5, exclude_1d=True).step()
    assert w.detach().tolist() == pytest.approx([1.9, -0.1])  # no trust ratio, no decay


class _Warmup:
    """CSI's training/scheduler.py GradualWarmupScheduler around CosineAnnealingLR, written out
    for a closed-form cosine (PyTorch 1.4's `step(epoch)` path), stepped as CSI's train loop does:
    after each optimiser step with the fractional epoch e - 1 + n / L."""

    def __init__(self, lr_init, multiplier, total_epoch, t_max):
        self.base, self.m, self.total, self.t_max = lr_init, multiplier, total_epoch, t_max
        self.finished = False
        self.cos_base = lr_init  # CosineAnnealingLR's base_lrs until the warm-up ends
        self.lr = self._get(0)  # the constructor's step(): last_epoch 0

    def _warm(self, e):
        return self.base * ((self.m - 1.0) * e / self.total + 1.0)

    def _get(self, e):
        if e > self.total:
            if not self.finished:
                self.cos_base, self.finished = self.base * self.m, True
                return self.cos_base  # the cosine's get_lr() at its last_epoch 0: its base
            return self.cos_base * (1 + math.cos(math.pi * (e - self.total) / self.t_max)) / 2
        return self._warm(e)

    def step(self, e):
        if self.finished:
            self.lr = self.cos_base * (1 + math.cos(math.pi * (e - self.total) / self.t_max)) / 2
        else:
            self.lr = self._get(e)


@pytest.mark.parametrize("epochs,warmup,per_epoch", [(30, 10, 4), (12, 3, 7), (1000, 10, 39)])
def test_csi_schedule_matches_the_official_combination(epochs, warmup, per_epoch):
    ref = _Warmup(0.1, 10.0, warmup, epochs)
    for epoch in range(1, epochs + 1):
        for n in range(per_epoch):
            t = (epoch - 1) * per_epoch + n
            assert csi_factor(t, per_epoch, epochs, warmup) * 1.0 == pytest.approx(ref.lr, rel=1e-9)
            ref.step(epoch - 1 + n / per_epoch)


def test_csi_schedule_per_epoch_factors():
    """Hand-checked points: lr_init (0.1 of peak) for the first two steps; 0.1 + 0.09 x the
    epoch during warm-up; the peak on the first step past it; cosine over `epochs` after."""
    per, epochs, w = 10, 100, 10
    assert csi_factor(0, per, epochs, w) == csi_factor(1, per, epochs, w) == pytest.approx(0.1)
    for e in range(w):
        assert csi_factor(e * per + 1, per, epochs, w) == pytest.approx(0.1 + 0.09 * e)
    assert csi_factor(w * per + 1, per, epochs, w) == pytest.approx(1.0)  # u = W exactly
    assert csi_factor(w * per + 2, per, epochs, w) == pytest.approx(1.0)  # the cosine's base
    u = 60 + 4 / per
    assert csi_factor(60 * per + 5, per, epochs, w) == pytest.approx(
        (1 + math.cos(math.pi * (u - w) / epochs)) / 2)
    last = epochs * per - 1  # the cosine spans `epochs` from the warm-up's end: it stops short
    u_last = (last - 1) / per
    assert csi_factor(last, per, epochs, w) == pytest.approx(
        (1 + math.cos(math.pi * (u_last - w) / epochs)) / 2)
    assert 0.025 < csi_factor(last, per, epochs, w) < 0.026  # 2.5% of the peak at 100 epochs
    assert csi_factor(1000 * per - 1, per, 1000, w) < 0.0003  # 0.03% at CSI's 1,000


def test_mcl_init_is_kaiming_fan_out_except_the_stem():
    torch.manual_seed(0)
    net = build_backbone("resnet18", 3, init="mcl")
    conv = net.layers[4].conv1  # 128 -> 256? any inner conv: fan_out = out_channels x 9
    std = math.sqrt(2.0 / (conv.out_channels * 9))
    assert float(conv.weight.detach().std()) == pytest.approx(std, rel=0.05)
    stem = net.stem[0]
    bound = 1 / math.sqrt(3 * 9)  # PyTorch's default conv init: U(-1/sqrt(fan_in), ...)
    assert float(stem.weight.detach().abs().max()) <= bound + 1e-6
    assert float(stem.weight.detach().std()) == pytest.approx(bound / math.sqrt(3), rel=0.15)
    bn = net.layers[0].bn1
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    torch.manual_seed(0)
    default = Network("resnet18", 3, proj_hidden=16, proj_dim=8).backbone.layers[4].conv1
    assert float(default.weight.detach().std()) < 0.7 * std  # torch's default is narrower


def test_sei_absolute_ridge_as_the_code_and_a_logged_fallback():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(200, 4), dim=1).double()
    labels = torch.zeros(200, dtype=torch.long)
    means, whiteners = fit_gaussians(z, labels, 1, 1e-9, relative=False)
    cov = torch.cov(z.t()) + 1e-9 * torch.eye(4, dtype=torch.float64)  # np.cov + 1e-9 I
    precision = whiteners[0] @ whiteners[0].t()
    assert torch.allclose(precision, torch.linalg.inv(cov), rtol=1e-8)
    # fewer samples than dimensions: singular at 1e-9, so the ridge grows and a warning says so
    few = torch.randn(3, 5).double()
    told = []
    fit_gaussians(few, torch.zeros(3, dtype=torch.long), 1, 0.0, relative=False,
                  on_fallback=told.append)
    assert told and "needed a ridge of" in told[0]


def _kde_data():
    import numpy as np

    rng = np.random.default_rng(0)
    train = rng.uniform(0, 1, size=(300, 64))
    near = np.vstack([train[:5], rng.uniform(0, 1, size=(40, 64))])  # 5 coincide with training
    far = rng.uniform(3, 4, size=(5, 64))
    return train, near, far


@pytest.mark.parametrize("bandwidth", [0.3, 1.0, 4.0])
def test_kde_scores_are_the_exact_gaussian_kde(bandwidth):
    """-log p(x) of the Gaussian KDE, against the sum written out with explicit differences,
    near the training data and far from all of it, over several query blocks."""
    import numpy as np
    from scipy.special import logsumexp

    from bench.methods.classical import ExactGaussianKDE

    train, near, far = _kde_data()
    test = np.vstack([near, far])
    ours = ExactGaussianKDE(bandwidth).fit(train)
    ours.CHUNK = 16
    sq = ((test[:, None, :] - train[None, :, :]) ** 2).sum(-1)
    log_p = (logsumexp(-sq / (2 * bandwidth**2), axis=1) - 0.5 * 64 * np.log(2 * np.pi)
             - 64 * np.log(bandwidth) - np.log(len(train)))
    np.testing.assert_allclose(ours.decision_function(test), -log_p, rtol=1e-10)


@pytest.mark.parametrize("bandwidth", [1.0, 4.0])
def test_kde_scores_equal_pyods_kde_where_its_tree_walk_is_accurate(bandwidth):
    """PyOD's KDE (sklearn's tree-based KernelDensity) gives the same scores near the training
    data at these bandwidths. Where every kernel value is tiny (bandwidth 0.3 here, or points
    far from all training data) sklearn's tree walk is off by up to 40 nats, kd_tree and
    ball_tree disagree (scikit-learn issues 7492, 25799, 27186), and the exact scores are kept."""
    import numpy as np
    from pyod.models.kde import KDE as PyODKDE

    from bench.methods.classical import ExactGaussianKDE

    train, near, _ = _kde_data()
    ours = ExactGaussianKDE(bandwidth).fit(train).decision_function(near)
    pyod = PyODKDE(bandwidth=bandwidth).fit(train).decision_function(near)
    np.testing.assert_allclose(ours, pyod, rtol=1e-9, atol=1e-9)


# --- CSI's colour jitter, NormalizeLayer and loader; MCL's flips and SEI fit ----------------------

def _csi_rgb2hsv(rgb):
    """CSI's transform_layers.rgb2hsv, transcribed."""
    r, g, b = rgb[:, 0, :, :], rgb[:, 1, :, :], rgb[:, 2, :, :]
    cmax = rgb.max(1)[0]
    cmin = rgb.min(1)[0]
    delta = cmax - cmin
    hue = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)
    hue = (hue % (2 * math.pi)) / (2 * math.pi)
    saturate = delta / cmax
    hsv = torch.stack([hue, saturate, cmax], dim=1)
    hsv[~torch.isfinite(hsv)] = 0.0
    return hsv


def _csi_hsv2rgb(hsv):
    h, s, v = hsv[:, [0]], hsv[:, [1]], hsv[:, [2]]
    c = v * s
    n = hsv.new_tensor([5, 3, 1]).view(3, 1, 1)
    k = (n + h * 6) % 6
    t = torch.clamp(torch.min(k, 4 - k), 0, 1)
    return v - c * t


def _csi_transform(x, f_contrast, f_h, f_s, f_v, contrast_first):
    """CSI's ColorJitterLayer.transform and RandomHSVFunction.forward, transcribed, with the
    factors given instead of drawn."""
    def adjust_contrast(x):
        means = torch.mean(x, dim=[2, 3], keepdim=True)
        x = (x - means) * f_contrast.view(-1, 1, 1, 1) + means
        return torch.clamp(x, 0, 1)

    def adjust_hsv(x):
        x = _csi_rgb2hsv(x)
        h = x[:, 0, :, :]
        h += f_h.view(-1, 1, 1) * 255.0 / 360.0
        h = h % 1
        x[:, 0, :, :] = h
        x[:, 1, :, :] = x[:, 1, :, :] * f_s.view(-1, 1, 1)
        x[:, 2, :, :] = x[:, 2, :, :] * f_v.view(-1, 1, 1)
        x = torch.clamp(x, 0, 1)
        return _csi_hsv2rgb(x)

    for t in ([adjust_contrast, adjust_hsv] if contrast_first else [adjust_hsv, adjust_contrast]):
        x = t(x)
    return x


@pytest.mark.parametrize("contrast_first", [True, False])
def test_csi_colour_jitter_equals_a_transcription_of_csis_layer(contrast_first):
    from bench.nn.augment import csi_jitter_with

    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 6, 6, generator=g)
    x[0] = 0.5  # a grey image: hue undefined, set to 0 as CSI does
    f_c, f_s, f_v = (0.6 + 0.8 * torch.rand(5, generator=g) for _ in range(3))
    f_h = 0.2 * torch.rand(5, generator=g) - 0.1
    got = csi_jitter_with(x, f_c, f_h, f_s, f_v, contrast_first)
    want = _csi_transform(x.clone(), f_c, f_h, f_s, f_v, contrast_first)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_csi_colour_jitter_draws_csis_factors_and_comes_before_the_crop(monkeypatch):
    from bench.nn import augment

    seen = {}
    real = augment.csi_jitter_with

    def spy(x, contrast, hue, saturation, value, contrast_first):
        seen.update(contrast=contrast, hue=hue, saturation=saturation, value=value,
                    shape=tuple(x.shape))
        return real(x, contrast, hue, saturation, value, contrast_first)

    monkeypatch.setattr(augment, "csi_jitter_with", spy)
    x = torch.rand(4000, 3, 8, 8)
    augment.ViewAugment(style="csi", crop_scale=(0.25, 0.25))(x)
    assert seen["shape"] == (4000, 3, 8, 8)  # jittered at full size: before the crop
    for name, (lo, hi) in {"contrast": (0.6, 1.4), "saturation": (0.6, 1.4), "value": (0.6, 1.4),
                           "hue": (-0.1, 0.1)}.items():
        v = seen[name]
        assert v.min() >= lo and v.max() <= hi and v.min() < lo + 0.01 and v.max() > hi - 0.01


def test_input_norm_csi_is_csis_normalize_layer():
    torch.manual_seed(0)
    plain = Network("resnet-tiny", 3, proj_hidden=8, proj_dim=4).eval()
    normed = Network("resnet-tiny", 3, proj_hidden=8, proj_dim=4, input_mean=(0.5,) * 3,
                     input_std=(0.5,) * 3).eval()
    normed.load_state_dict(plain.state_dict())  # no parameters of its own
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(normed(x)["z"], plain((x - 0.5) / 0.5)["z"], atol=1e-6)
    assert not torch.allclose(normed(x)["z"], plain(x)["z"], atol=1e-3)  # BN does not undo it


def test_csi_keeps_the_last_partial_batch_and_mcl_drops_it():
    from bench.nn.optim import steps_per_epoch

    assert steps_per_epoch(50_000, 128, drop_last=False) == 391  # len(DataLoader) of CSI
    assert steps_per_epoch(50_000, 128, drop_last=True) == 390
    assert steps_per_epoch(10, 32, drop_last=True) == 1 == steps_per_epoch(10, 32, drop_last=False)


def test_mcl_flips_each_rotation_entry_on_its_own():
    """MCL's loader: each (image, rotation) entry flips each view independently (vertically for
    90/270, the same as a horizontal flip before rotating)."""
    from helpers import tiny

    det = tiny("mcl", batch_size=64)
    seen = []
    det.model_ = lambda x: seen.append(x) or {"z": torch.randn(x.shape[0], 4)}
    det.input = lambda x: x
    det.view = lambda view: (lambda x: x)  # no crop: compare the flips alone

    class Ctx:
        labeled = False

    det.ctx_ = Ctx()
    x = torch.rand(64, 1, 6, 6).mul(255).to(torch.uint8)
    x[:, :, :, :3] = 0  # left half dark: a flip is visible
    torch.manual_seed(0)
    det.training_loss(x, torch.zeros(64, dtype=torch.long))
    views = seen[0].view(2, 4, 64, 1, 6, 6)
    from bench.nn.shifts import rotate

    unrotated = torch.stack([rotate(views[:, k].reshape(-1, 1, 6, 6), -k).reshape(2, 64, 1, 6, 6)
                             for k in range(4)], 1)  # [view, rotation, image, ...]
    flipped = unrotated[..., :3].sum((-1, -2, -3)) > 0  # the dark half moved right
    assert flipped.float().mean().item() == pytest.approx(0.5, abs=0.1)
    per_image = flipped.reshape(8, 64)
    assert not (per_image == per_image[0]).all(), "rotations share one flip"


def test_sei_fit_fraction_as_mcls_code():
    from bench.methods.mcl import sei_fraction

    assert sei_fraction("code", 50_000) == pytest.approx(0.40448, abs=1e-5)  # 79 x 1024 / 200,000
    assert sei_fraction("code", 5_000) == pytest.approx(0.4608)  # 9 x 1024 / 20,000
    assert sei_fraction(0.4, 5_000) == 0.4
    assert sei_fraction("code", 100) == 1.0
