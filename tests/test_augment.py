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


def test_crop_boxes_are_whole_pixels_inside_the_image():
    box = sample_crop_boxes(256, (0.08, 1.0), (3 / 4, 4 / 3), (32, 32))
    px = box * 32
    assert torch.equal(px, px.round())  # offsets and sizes in whole pixels
    assert box.unique(dim=0).shape[0] > 200
    assert (px[:, 2] >= 1).all() and (px[:, 0] + px[:, 2] <= 32).all()
    assert (px[:, 1] + px[:, 3] <= 32).all()
    fixed = sample_crop_boxes(64, (0.54, 0.54), (1.0, 1.0), (32, 32)) * 32
    assert (fixed[:, 2:] == round((0.54 * 32 * 32) ** 0.5)).all()  # 23.5 px -> 24


def test_crop_sizes_are_distributed_as_torchvisions():
    """The same distribution as RandomResizedCrop.get_params (and CSI's layer): whole-pixel
    sides, the first of 10 draws that fits. Continuous sides gave a mean area of 0.478 at 32 px,
    torchvision 0.491."""
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    n = 20000
    ours = sample_crop_boxes(n, (0.08, 1.0), (3 / 4, 4 / 3), (32, 32))
    ours_area = (ours[:, 2] * ours[:, 3]).mean().item()
    image = torch.zeros(1, 32, 32)
    theirs = torch.tensor([RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
                           for _ in range(n)], dtype=torch.float64)
    theirs_area = (theirs[:, 2] * theirs[:, 3] / 1024).mean().item()
    assert abs(ours_area - theirs_area) < 0.006
    assert abs(theirs_area - 0.491) < 0.006  # the figure the docs give
    # offsets: uniform over the whole-pixel positions the box allows
    left, room = ours[:, 0] * 32, 32 - ours[:, 2] * 32
    assert abs((left[room > 0] / room[room > 0]).mean().item() - 0.5) < 0.02
    assert (left <= room).all()


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


def test_csi_scores_all_rotations_of_a_batch_in_one_pass(monkeypatch):
    """CSI's test-time ensemble: a batch's K rotations go through one augmentation call and
    one forward pass (as its _get_features); the rows land at their rotation and image."""
    import bench.methods.csi as csi_module
    from bench.methods.csi import CSI, CSIConfig
    from bench.nn.backbones import Network
    from bench.nn.context import FitContext

    monkeypatch.setattr(csi_module, "random_hflip", lambda x: x)  # deterministic views
    det = CSI(CSIConfig(score_batch_size=3, ens_samples=1, test_crop_area=1.0,
                        backbone="resnet-tiny"))
    det.model_ = Network("resnet-tiny", 1, proj_hidden=8, proj_dim=4, n_shifts=4).eval()
    det.ctx_ = FitContext(progress=False)
    images = (torch.rand(5, 1, 16, 16) * 255).to(torch.uint8)
    got = det.ensemble_features(images)
    with torch.no_grad():
        for k in range(4):
            want = det.model_(rotate(images.float() / 255, k))
            assert torch.allclose(got["z"][k], want["z"], atol=1e-5)
            assert torch.allclose(got["shift"][k], want["shift_logits"], atol=1e-5)


def test_a_blur_with_its_sigma_bound_reads_nothing_back_and_equals_the_measured_one():
    from bench.nn.augment import gaussian_blur

    x = torch.rand(4, 3, 24, 24)
    sigma = torch.tensor([0.3, 2.0, 1.1, 0.7])  # the bound is reached
    assert torch.equal(gaussian_blur(x, sigma, max_sigma=2.0), gaussian_blur(x, sigma))
