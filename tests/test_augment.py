import torch

from bench.nn.augment import (
    SIMCLR_VIEW,
    ViewAugment,
    color_jitter,
    hsv_to_rgb,
    random_hflip,
    rgb_to_hsv,
    sample_crop_boxes,
)
from bench.nn.shifts import all_rotations, rotate, rotate_each


def test_crop_boxes_differ_per_sample_and_respect_the_ranges():
    box = sample_crop_boxes(256, (0.08, 1.0), (3 / 4, 4 / 3))
    area = box[:, 0] * box[:, 1]
    assert box.unique(dim=0).shape[0] > 200
    assert (box <= 1).all() and (area >= 0.08 - 1e-6).all()
    fixed = sample_crop_boxes(64, (0.54, 0.54), (1.0, 1.0))
    assert torch.allclose(fixed, torch.full_like(fixed, 0.54 ** 0.5))


def test_augmentation_draws_different_parameters_per_sample():
    x = torch.rand(1, 3, 16, 16).expand(32, -1, -1, -1).contiguous()  # one image, 32 times
    out = SIMCLR_VIEW(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    flat = out.flatten(1)
    distinct = torch.cdist(flat, flat) > 1e-4
    assert distinct.sum() >= 32 * 31 * 0.9  # nearly every pair of copies differs


def test_grayscale_images_skip_colour_steps():
    x = torch.rand(8, 1, 12, 12)
    aug = ViewAugment(crop_scale=(1.0, 1.0), flip_p=0.0)
    assert torch.allclose(aug(x), x, atol=1e-5)  # whole-image crop, no flip, no colour


def test_jitter_only_where_applied_and_hsv_round_trip():
    x = torch.rand(6, 3, 5, 5)
    apply = torch.tensor([True, False, True, False, True, False])
    y = color_jitter(x, (0.4, 0.4, 0.4, 0.1), apply)
    assert torch.equal(y[~apply], x[~apply])
    assert not torch.allclose(y[apply], x[apply])
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5)


def test_hue_shift_matches_torchvision():
    from torchvision.transforms.functional import adjust_hue

    x = torch.rand(4, 3, 7, 7)
    x[0] = 0.5  # a gray image: hue undefined, must stay gray
    for shift in (-0.1, 0.05, 0.3):
        hsv = rgb_to_hsv(x)
        hsv[:, 0] = (hsv[:, 0] + shift) % 1.0
        assert torch.allclose(hsv_to_rgb(hsv), adjust_hue(x, shift), atol=1e-5)


def test_rotations():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    shifted, labels = all_rotations(x)
    assert labels.tolist() == [0, 1, 2, 3]
    assert torch.equal(shifted[1], rotate(x, 1)[0])
    assert torch.equal(rotate(rotate(x, 1), 3), x)
    each = rotate_each(x.repeat(4, 1, 1, 1), torch.tensor([0, 1, 2, 3]))
    assert torch.equal(each, shifted)
    flipped = random_hflip(x.repeat(64, 1, 1, 1))
    assert 0 < (flipped != x).flatten(1).any(1).sum() < 64


def test_gaussian_blur_per_image_sigma_by_hand():
    from bench.nn.augment import gaussian_blur

    x = torch.zeros(2, 1, 21, 21)
    x[:, :, 10, 10] = 1.0  # a point: its blur is the kernel itself
    y = gaussian_blur(x, torch.tensor([0.5, 2.0]))
    assert torch.allclose(y.sum((1, 2, 3)), torch.ones(2), atol=1e-5)  # mass kept
    t = torch.arange(-3, 4, dtype=torch.float32)
    for i, s in enumerate((0.5, 2.0)):
        k = torch.exp(-t ** 2 / (2 * s * s))
        k = k / torch.exp(-torch.arange(-6, 7.0) ** 2 / (2 * s * s)).sum()  # radius 3 x max sigma
        assert torch.allclose(y[i, 0, 10, 7:14], k * k[3], atol=1e-6)  # separable: row x centre
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([1.5])), flat, atol=1e-6)
