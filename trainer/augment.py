"""Batched, per-sample augmentation on the device (uint8 NCHW in, normalised float views out): every
op runs on the whole batch at once, with per-image random parameters, and no PIL work.

What each policy draws, and how `aug_strength` scales it, is in trainer/policies.py.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from .policies import BLUR_REFERENCE_SIZE, CROP_AREA_FLOOR, MAX_STRENGTH, POLICIES, ViewParams, policy_views

__all__ = ["BLUR_REFERENCE_SIZE", "CROP_AREA_FLOOR", "MAX_STRENGTH", "POLICIES", "ViewParams", "policy_views"]


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def _bernoulli(n: int, p: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) < p


CROP_TRIES = 10


def crop_boxes(b: int, h: int, w: int, p: ViewParams, gen: torch.Generator, device) -> tuple[torch.Tensor, ...]:
    """(centre x, centre y, width, height) of b crop boxes in fractions of an h x w image, drawn as
    torchvision's RandomResizedCrop draws them: area fraction uniform and log aspect uniform,
    redrawn up to CROP_TRIES times until the box fits, else the central crop clamped to the ratio
    range. All tries are drawn at once; each image takes its first that fits."""
    area = _uniform(b * CROP_TRIES, p.crop_min_area, p.crop_max_area, gen, device).view(b, CROP_TRIES)
    log_ratio = _uniform(b * CROP_TRIES, math.log(p.crop_ratio[0]), math.log(p.crop_ratio[1]), gen, device)
    ratio = torch.exp(log_ratio).view(b, CROP_TRIES) * (h / w)  # aspect in fractions of the sides
    cw, ch = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
    fits = (cw <= 1 + 1e-6) & (ch <= 1 + 1e-6)
    first = fits.int().argmax(dim=1, keepdim=True)
    aspect = w / h
    fallback_w = h * p.crop_ratio[1] / w if aspect > p.crop_ratio[1] else 1.0
    fallback_h = w / (p.crop_ratio[0] * h) if aspect < p.crop_ratio[0] else 1.0
    found = fits.any(dim=1)
    cw = torch.where(found, cw.gather(1, first).squeeze(1).clamp(max=1.0), torch.full((b,), fallback_w, device=device))
    ch = torch.where(found, ch.gather(1, first).squeeze(1).clamp(max=1.0), torch.full((b,), fallback_h, device=device))
    cx = torch.where(found, torch.rand(b, generator=gen, device=device) * (1 - cw) + cw / 2, 0.5)
    cy = torch.where(found, torch.rand(b, generator=gen, device=device) * (1 - ch) + ch / 2, 0.5)
    return cx, cy, cw, ch


def crop_and_flip(images: torch.Tensor, p: ViewParams, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random resized crop + horizontal flip, one affine grid_sample for the whole batch.

    images: float (B, C, H, W) in [0, 1]; the boxes come from crop_boxes.
    """
    b, _, h, w = images.shape
    dev = images.device
    cx, cy, cw, ch = crop_boxes(b, h, w, p, gen, dev)
    flip = _bernoulli(b, p.flip_p, gen, dev)
    sx = torch.where(flip, -cw, cw)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=images.dtype)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = cx * 2 - 1
    theta[:, 1, 1] = ch
    theta[:, 1, 2] = cy * 2 - 1
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    # grid_sample does not antialias: each image samples the level of a 2x pyramid at which its
    # crop spans at most about 2 * size pixels (a full 96 px image -> 32 from 48 px, a small crop from 96)
    levels = [images]
    while min(levels[-1].shape[-2:]) >= 2 * size:
        levels.append(F.avg_pool2d(levels[-1], 2, ceil_mode=True))
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if len(levels) > 1:
        step = torch.minimum(cw * w, ch * h) / size  # source pixels per output pixel
        level = torch.log2(step.clamp(min=1)).floor().clamp(max=len(levels) - 1).view(-1, 1, 1, 1)
        for i, shrunk in enumerate(levels[1:], start=1):
            sampled = F.grid_sample(shrunk, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            out = torch.where(level == i, sampled, out)
    return out


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    s = delta / maxc.clamp(min=1e-8)
    d = delta.clamp(min=1e-8)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x[:, 0], x[:, 1], x[:, 2]
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = torch.stack([v, q, p, p, t, v], 1).gather(1, i.unsqueeze(1))
    g = torch.stack([t, v, v, q, p, p], 1).gather(1, i.unsqueeze(1))
    b = torch.stack([p, p, t, v, v, q], 1).gather(1, i.unsqueeze(1))
    return torch.cat([r, g, b], dim=1)


def _hue(y: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    hsv = _rgb_to_hsv(y)
    return _hsv_to_rgb(torch.cat([(hsv[:, 0:1] + shift) % 1.0, hsv[:, 1:]], dim=1))


BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


def color_jitter(x: torch.Tensor, p: ViewParams, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation and hue with per-image factors, in an order drawn per image
    (as the paper and torchvision do), on the images chosen with jitter_p.

    Brightness, contrast and saturation are factors f in [1 - m, 1 + m] (torchvision's convention),
    each a blend y -> g + f * (y - g) towards black, the image's mean grey or its grey version; hue
    is a shift in [-m, m] of a turn. Without a host sync: hue, the costly one, runs once on the
    batch; each position of the order before and after it blends every image with the operation
    drawn for it there.
    """
    n = x.shape[0]
    dev = x.device
    apply = _bernoulli(n, p.jitter_p, gen, dev)
    if max(p.jitter) == 0:
        return x
    b, c, s, h = p.jitter
    factor = torch.stack([_uniform(n, max(0.0, 1 - b), 1 + b, gen, dev),
                          _uniform(n, max(0.0, 1 - c), 1 + c, gen, dev),
                          _uniform(n, max(0.0, 1 - s), 1 + s, gen, dev)], dim=1)  # (n, 3)
    hue_shift = _uniform(n, -h, h, gen, dev).view(-1, 1, 1, 1)
    order = torch.rand(n, 4, generator=gen, device=dev).argsort(dim=1)  # order[i, k]: the op at position k
    hue_at = (order == HUE).int().argmax(dim=1)
    active = torch.tensor([b > 0, c > 0, s > 0, False], device=dev)

    def blends(y: torch.Tensor, positions: range, before_hue: bool) -> torch.Tensor:
        for k in positions:
            op = order[:, k]
            run = active[op] & ((k < hue_at) if before_hue else (k > hue_at))
            f = factor.gather(1, op.clamp(max=SATURATION).view(-1, 1)).view(-1, 1, 1, 1)
            gray = _gray(y)
            target = torch.where((op == SATURATION).view(-1, 1, 1, 1), gray,
                                 torch.where((op == CONTRAST).view(-1, 1, 1, 1),
                                             gray.mean(dim=(1, 2, 3), keepdim=True), torch.zeros_like(gray)))
            y = torch.where(run.view(-1, 1, 1, 1), (target + f * (y - target)).clamp(0, 1), y)
        return y

    y = blends(x, range(0, 3), before_hue=True)
    if h > 0:
        y = _hue(y, hue_shift)
    y = blends(y, range(1, 4), before_hue=False)
    return torch.where(apply.view(-1, 1, 1, 1), y, x)


def grayscale(x: torch.Tensor, p: ViewParams, gen: torch.Generator) -> torch.Tensor:
    apply = _bernoulli(x.shape[0], p.grayscale_p, gen, x.device).view(-1, 1, 1, 1)
    return torch.where(apply, _gray(x).expand_as(x), x)


def blur_sigmas(p: ViewParams, size: int) -> tuple[float, float]:
    """The sigma range for a view of side `size`: the policy's range, given at 224 px, scaled."""
    return p.blur_sigma[0] * size / BLUR_REFERENCE_SIZE, p.blur_sigma[1] * size / BLUR_REFERENCE_SIZE


def blur_kernel_size(max_sigma: float, size: int) -> int:
    """Odd kernel reaching 3 sigma either side (at least 3 taps, reflect padding needs radius < size)."""
    radius = min(max(1, math.ceil(3 * max_sigma)), size - 1)
    return 2 * radius + 1


def gaussian_blur(x: torch.Tensor, p: ViewParams, gen: torch.Generator) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma on the images chosen with blur_p."""
    n, ch, h, w = x.shape
    dev = x.device
    apply = _bernoulli(n, p.blur_p, gen, dev)
    low, high = blur_sigmas(p, min(h, w))
    sigma = _uniform(n, low, high, gen, dev).clamp(min=1e-6)
    if p.blur_p == 0 or high == 0:
        return x
    k = blur_kernel_size(high, min(h, w))
    offsets = torch.arange(k, device=dev, dtype=x.dtype) - k // 2
    kernel = torch.exp(-(offsets.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).to(x.dtype) ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (n, k)
    kernel = kernel.repeat_interleave(ch, dim=0)  # (n*ch, k)
    flat = x.reshape(1, n * ch, h, w)
    flat = F.pad(flat, (k // 2, k // 2, 0, 0), mode="reflect")
    flat = F.conv2d(flat, kernel.view(n * ch, 1, 1, k), groups=n * ch)
    flat = F.pad(flat, (0, 0, k // 2, k // 2), mode="reflect")
    flat = F.conv2d(flat, kernel.view(n * ch, 1, k, 1), groups=n * ch)
    return torch.where(apply.view(-1, 1, 1, 1), flat.view(n, ch, h, w), x)


def solarize(x: torch.Tensor, p: ViewParams, gen: torch.Generator) -> torch.Tensor:
    apply = _bernoulli(x.shape[0], p.solarize_p, gen, x.device).view(-1, 1, 1, 1)
    return torch.where(apply & (x >= p.solarize_threshold), 1.0 - x, x)


def flip(x: torch.Tensor, p: ViewParams, gen: torch.Generator) -> torch.Tensor:
    """Horizontal flip on the images chosen with flip_p (a flip right after the crop is part of the crop's grid)."""
    apply = _bernoulli(x.shape[0], p.flip_p, gen, x.device).view(-1, 1, 1, 1)
    return torch.where(apply, x.flip(-1), x)


def equalize(x: torch.Tensor, p: ViewParams, gen: torch.Generator) -> torch.Tensor:
    """Histogram equalization of each channel of the images chosen with equalize_p, as PIL and
    torchvision compute it (a lookup table from the cumulative histogram of the image's 8-bit values;
    an image whose channel has a single value is left as it is). No magnitude: aug_strength leaves it."""
    n, c, h, w = x.shape
    apply = _bernoulli(n, p.equalize_p, gen, x.device).view(-1, 1, 1, 1)
    levels = x.mul(256.0 - 1e-3).to(torch.uint8).flatten(2).long()  # torchvision's float -> uint8
    hist = torch.zeros(n, c, 256, dtype=torch.int32, device=x.device).scatter_add_(
        2, levels, torch.ones_like(levels, dtype=torch.int32))
    cum = hist.cumsum(2)
    non_max = h * w - hist.gather(2, cum.argmax(2, keepdim=True))  # pixels below the channel's top value
    step = non_max.div(255, rounding_mode="floor")
    lut = (cum[..., :-1] + step // 2).div(step.clamp(min=1), rounding_mode="floor").clamp(0, 255)
    lut = torch.cat([torch.zeros_like(lut[..., :1]), lut], dim=2)
    out = torch.where(step > 0, lut.gather(2, levels), levels).view(n, c, h, w).float().div(255.0)
    return torch.where(apply, out, x)


ERASE_TRIES = 10


def erase(x: torch.Tensor, p: ViewParams, gen: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017) as torchvision's RandomErasing draws it: a box of area
    fraction uniform in erase_scale and log aspect uniform in erase_ratio, redrawn up to ERASE_TRIES
    times until it fits inside the view (none fits: nothing erased), set to erase_value, on the images
    chosen with erase_p. aug_strength scales the area range."""
    n, _, h, w = x.shape
    dev = x.device
    apply = _bernoulli(n, p.erase_p, gen, dev)
    area = _uniform(n * ERASE_TRIES, p.erase_scale[0], p.erase_scale[1], gen, dev).view(n, ERASE_TRIES) * (h * w)
    log_ratio = _uniform(n * ERASE_TRIES, math.log(p.erase_ratio[0]), math.log(p.erase_ratio[1]), gen, dev)
    ratio = torch.exp(log_ratio).view(n, ERASE_TRIES)
    eh, ew = torch.sqrt(area * ratio).round(), torch.sqrt(area / ratio).round()
    fits = (eh < h) & (ew < w)
    first = fits.int().argmax(dim=1, keepdim=True)
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
    top = (torch.rand(n, generator=gen, device=dev) * (h - eh + 1)).floor()
    left = (torch.rand(n, generator=gen, device=dev) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=dev).view(1, -1, 1)
    cols = torch.arange(w, device=dev).view(1, 1, -1)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1)))
    erased = (apply & fits.any(dim=1)).view(-1, 1, 1) & inside
    return torch.where(erased.unsqueeze(1), torch.full_like(x, p.erase_value), x)


# each op after the crop, with the test that keeps an op of probability 0 from drawing anything
OPS = {
    "flip": (flip, lambda p: p.flip_p > 0),
    "color_jitter": (color_jitter, lambda p: p.jitter_p > 0),
    "grayscale": (grayscale, lambda p: p.grayscale_p > 0),
    "blur": (gaussian_blur, lambda p: p.blur_p > 0 and p.blur_sigma[1] > 0),
    "solarize": (solarize, lambda p: p.solarize_p > 0),
    "equalize": (equalize, lambda p: p.equalize_p > 0),
    "erase": (erase, lambda p: p.erase_p > 0 and p.erase_scale[1] > 0),
}


def augment(
    images: torch.Tensor,
    p: ViewParams,
    size: int,
    gen: torch.Generator,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> torch.Tensor:
    """One view of a uint8 (B, C, H, W) batch: the view's ops in its order (a crop first, with the flip
    that follows it in the same grid; a view without a crop is the whole image resized), normalised."""
    x = images.float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    ops = p.ops
    if ops and ops[0] == "crop":
        fused = len(ops) > 1 and ops[1] == "flip"
        x = crop_and_flip(x, p if fused else replace(p, flip_p=0.0), size, gen).clamp_(0, 1)
        ops = ops[2:] if fused else ops[1:]
    elif x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    for name in ops:
        op, active = OPS[name]
        if active(p):
            x = op(x, p, gen)
    return (x - mean) / std


def resize_only(images: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The evaluation view: the whole image resized to size, normalised."""
    x = images.float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - mean) / std
