"""SimCLR view augmentation on a whole batch on its own device, with per-sample random parameters.

Written once, shared by SimCLR, CSI, MCL and rotation prediction. Input and output are float
images in [0, 1], N x C x H x W. No PIL, no DataLoader workers: one batch costs a handful of
kernels (one grid_sample for crop + flip, elementwise colour ops).

Two colour jitters: torchvision's (SimCLR's and MCL's pipelines: crop, then jitter and grey) and
CSI's own layers (`csi_color_jitter`: jitter and grey, then the crop). Departures from
torchvision's per-image transforms, all distribution-preserving or documented in docs/methods.md:
crop boxes (whole-pixel sizes and offsets, as torchvision and CSI draw them) whose sides exceed the
image after 10 tries fall back to the whole image (torchvision: a centre crop at the clamped
ratio); colour jitter applies brightness, contrast, saturation, hue
in that fixed order (torchvision: a random order per image); the crop is resampled bilinearly
from the source pixels in one step (torchvision: crop, then resize).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from bench.nn.precision import fp32_region

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1]."""
    return images.float().div_(255.0)


CROP_TRIES = 10  # torchvision's RandomResizedCrop and CSI's layer: 10 draws per image


def sample_crop_boxes(n: int, scale: tuple[float, float], ratio: tuple[float, float],
                      size: tuple[int, int], device: torch.device | str = "cpu",
                      tries: int = CROP_TRIES) -> torch.Tensor:
    """Per-sample crop boxes (left, top, width, height) as fractions of the image's sides, N x 4.

    As torchvision's RandomResizedCrop draws them on an H x W image (`size`): area ~ U(scale) x
    H W, log aspect ratio ~ U(log ratio), width and height rounded to whole pixels, the first of
    `tries` draws that fits kept (the whole image when none does), then a whole-pixel offset
    ~ U{0, ..., W - w}. Every draw of every sample in one go: a fixed handful of operators, no
    host synchronisation.
    """
    h_px, w_px = size
    area = torch.empty(tries, n, device=device).uniform_(*scale) * (h_px * w_px)
    log_r = torch.empty(tries, n, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    r = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * r))
    h = torch.round(torch.sqrt(area / r))
    fits = (w > 0) & (w <= w_px) & (h > 0) & (h <= h_px)
    first = fits.int().argmax(0, keepdim=True)  # the first draw that fits (0 if none does)
    found = fits.any(0)
    w = torch.where(found, w.gather(0, first)[0], torch.full_like(w[0], w_px))
    h = torch.where(found, h.gather(0, first)[0], torch.full_like(h[0], h_px))
    left = torch.floor(torch.rand(n, device=device) * (w_px - w + 1))
    top = torch.floor(torch.rand(n, device=device) * (h_px - h + 1))
    return torch.stack([left / w_px, top / h_px, w / w_px, h / h_px], 1)


def crop_and_flip(x: torch.Tensor, box: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Resample each image's box (left, top, width, height: fractions of its sides) to the
    image's size, bilinearly, mirrored where flip is True.

    In fp32 even inside autocast: a bf16 grid would shift crops by up to ~0.05 px.
    """
    with fp32_region(x):
        x = x.float()
        left, top, w, h = box.to(x.dtype).unbind(1)
        cx, cy = 2 * left + w - 1, 2 * top + h - 1  # box centres in [-1, 1]
        sign = 1.0 - 2.0 * flip.to(x.dtype)
        zero = torch.zeros_like(w)
        theta = torch.stack([torch.stack([w * sign, zero, cx], 1),
                             torch.stack([zero, h, cy], 1)], 1)  # N x 2 x 3, no index writes
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    wr, wg, wb = GRAY_WEIGHTS
    return (wr * r + wg * g + wb * b).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * a + (1 - factor) * b).clamp_(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB to HSV with every channel in [0, 1]; gray pixels get hue 0 (as torchvision)."""
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    delta = maxc - minc
    s = delta / maxc.clamp_min(1e-12)
    # hue in sixths, offset by the sector of the largest channel; one division for all pixels
    sixths = torch.where(maxc == r, g - b,
                         torch.where(maxc == g, (b - r) + 2 * delta, (r - g) + 4 * delta))
    h = (sixths / (6 * delta).clamp_min(1e-12)).remainder_(1.0)
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of rgb_to_hsv, elementwise: channel c = v - v s clamp(min(k, 4 - k), 0, 1) with
    k = (n_c + 6 h) mod 6 and n = (5, 3, 1) for (r, g, b); twice as fast as a sector lookup."""
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    k = torch.cat([(n + h * 6.0) % 6.0 for n in (5.0, 3.0, 1.0)], 1)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp_(0, 1)


def color_jitter(x: torch.Tensor, strength: tuple[float, float, float, float],
                 apply: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter with per-sample factors (RGB input)."""
    n = x.shape[0]
    brightness, contrast, saturation, hue = strength

    def factor(spread: float) -> torch.Tensor:
        lo = max(0.0, 1 - spread)
        return torch.empty(n, 1, 1, 1, device=x.device).uniform_(lo, 1 + spread)

    y = (x * factor(brightness)).clamp_(0, 1)
    mean = grayscale(y).mean(dim=(2, 3), keepdim=True)
    y = _blend(y, mean, factor(contrast))
    y = _blend(y, grayscale(y), factor(saturation))
    if hue > 0:
        hsv = rgb_to_hsv(y)
        shift = torch.empty(n, 1, 1, device=x.device).uniform_(-hue, hue)
        hsv = torch.stack([(hsv[:, 0] + shift) % 1.0, hsv[:, 1], hsv[:, 2]], 1)
        y = hsv_to_rgb(hsv)
    return torch.where(apply.view(-1, 1, 1, 1), y, x)


def rgb_to_hsv_atan2(x: torch.Tensor) -> torch.Tensor:
    """CSI's RGB to HSV (`rgb2hsv` of its transform_layers.py): the hue by atan2 (within 1.2
    degrees of the sector formula), 0 where it is undefined."""
    r, g, b = x.unbind(1)
    maxc = x.max(1).values
    delta = maxc - x.min(1).values
    hue = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)
    hue = (hue % (2 * math.pi)) / (2 * math.pi)
    hsv = torch.stack([hue, delta / maxc, maxc], 1)
    return torch.where(torch.isfinite(hsv), hsv, torch.zeros_like(hsv))


def csi_jitter_with(x: torch.Tensor, contrast: torch.Tensor, hue: torch.Tensor,
                    saturation: torch.Tensor, value: torch.Tensor, contrast_first: bool
                    ) -> torch.Tensor:
    """CSI's ColorJitterLayer.transform with given per-sample factors (each N): contrast about
    each channel's own mean; hue shifted by f x 255/360 and saturation and brightness scaled in
    HSV; the two steps in the order given (CSI draws it once per batch)."""
    def adjust_contrast(y: torch.Tensor) -> torch.Tensor:
        means = y.mean(dim=(2, 3), keepdim=True)
        return ((y - means) * contrast.view(-1, 1, 1, 1) + means).clamp(0, 1)

    def adjust_hsv(y: torch.Tensor) -> torch.Tensor:
        h, s, v = rgb_to_hsv_atan2(y).unbind(1)
        h = (h + hue.view(-1, 1, 1) * 255.0 / 360.0) % 1
        hsv = torch.stack([h, s * saturation.view(-1, 1, 1), v * value.view(-1, 1, 1)], 1)
        return hsv_to_rgb(hsv.clamp(0, 1))

    for step in ((adjust_contrast, adjust_hsv) if contrast_first else (adjust_hsv, adjust_contrast)):
        x = step(x)
    return x


def csi_color_jitter(x: torch.Tensor, strength: tuple[float, float, float, float],
                     apply: torch.Tensor) -> torch.Tensor:
    """CSI's colour jitter on the samples where `apply` is True (RGB input): factors as its
    ColorJitterLayer draws them, the order of its two steps drawn once per batch."""
    n = x.shape[0]
    brightness, contrast, saturation, hue = strength

    def factor(spread: float, center: float = 1.0, floor: float | None = 0.0) -> torch.Tensor:
        lo = center - spread if floor is None else max(floor, center - spread)
        return torch.empty(n, device=x.device).uniform_(lo, center + spread)

    contrast_first = bool(torch.rand(()) > 0.5)  # CSI: np.random.rand() > 0.5, per batch
    y = csi_jitter_with(x, factor(contrast), factor(hue, 0.0, None), factor(saturation),
                        factor(brightness), contrast_first)
    return torch.where(apply.view(-1, 1, 1, 1), y, x)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float | None = None
                  ) -> torch.Tensor:
    """Each image blurred by a Gaussian of its own std `sigma` (pixels), separably, reflecting
    at the border; the kernel spans 3 std of the largest, or of `max_sigma` (the bound sigma
    is drawn under: then no value is read back from the device, no host synchronisation)."""
    n, c, h, w = x.shape
    largest = float(sigma.max()) if max_sigma is None else max_sigma
    r = max(1, min(int(math.ceil(3 * largest)), min(h, w) - 1))
    t = torch.arange(-r, r + 1, device=x.device, dtype=torch.float32)
    k = torch.exp(-t[None] ** 2 / (2 * sigma.float()[:, None] ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [n c, 2r + 1]
    with fp32_region(x):
        y = x.float().reshape(1, n * c, h, w)
        y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(n * c, 1, 1, -1),
                     groups=n * c)
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(n * c, 1, -1, 1),
                     groups=n * c)
    return y.view(n, c, h, w)


@dataclass(frozen=True)
class ViewAugment:
    """SimCLR's view augmentation (CIFAR variant, no blur), applied per sample.

    Colour steps are skipped for 1-channel images. ``crop_scale=(a, a)`` fixes the crop area, as
    CSI does at test time (a = 0.54).
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    style: Literal["torchvision", "csi"] = "torchvision"  # whose colour jitter, and its place

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.style == "csi":  # CSI's code: jitter and grey first, then the crop
            return self._crop(self._colour(x))
        return self._colour(self._crop(x))

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        box = sample_crop_boxes(n, self.crop_scale, self.crop_ratio, tuple(x.shape[2:]),
                                x.device)
        flip = torch.rand(n, device=x.device) < self.flip_p
        return crop_and_flip(x, box, flip)

    def _colour(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3:
            return x
        n = x.shape[0]
        jitter = csi_color_jitter if self.style == "csi" else color_jitter
        x = jitter(x, self.jitter, torch.rand(n, device=x.device) < self.jitter_p)
        gray = torch.rand(n, device=x.device) < self.grayscale_p
        return torch.where(gray.view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)


def random_hflip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability p.

    Rotation-based methods flip *before* rotating (CSI's order): a left-right flip after a 90
    degree rotation would look like a 270 degree rotation and corrupt the shift label. MCL's code
    gets the same effect by flipping rotated images vertically for 90 / 270 degrees.
    """
    flip = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


SIMCLR_VIEW = ViewAugment()
# after a rotation shift: no flip here (flip first with random_hflip, then rotate, then this)
SHIFTED_VIEW = ViewAugment(flip_p=0.0)
CLASSIFIER_VIEW = ViewAugment(crop_scale=(0.64, 1.0), jitter_p=0.0, grayscale_p=0.0)  # CE
ROT_VIEW = ViewAugment(crop_scale=(0.64, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)
