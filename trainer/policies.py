"""The augmentation policies as plain data (no torch): the two views (T, T') each policy draws.

Crop: minimum area fraction (maximum 1) and
aspect-ratio range (3/4, 4/3) everywhere; flip p 0.5 everywhere; jitter: (brightness, contrast,
saturation, hue) with its probability; blur: probability, sigma range (0.1, 2.0) at 224 px.

| policy       | view | crop min | jitter (b, c, s, h), p    | gray p | blur p | solarize p | source                       |
|--------------|------|----------|---------------------------|--------|--------|------------|------------------------------|
| byol         | T    | 0.08     | (0.4, 0.4, 0.2, 0.1), 0.8 | 0.2    | 1.0    | 0.0        | BYOL paper (Grill et al.)    |
|              | T'   | 0.08     | (0.4, 0.4, 0.2, 0.1), 0.8 | 0.2    | 0.1    | 0.2        |                              |
| byol_small   | T    | 0.08     | (0.4, 0.4, 0.2, 0.1), 0.8 | 0.2    | 0.0    | 0.0        | solo-learn CIFAR BYOL        |
|              | T'   | 0.08     | (0.4, 0.4, 0.2, 0.1), 0.8 | 0.2    | 0.0    | 0.2        |                              |
| simclr       | both | 0.08     | (0.8, 0.8, 0.8, 0.2), 0.8 | 0.2    | 0.5    | 0.0        | SimCLR paper, ImageNet       |
| simclr_small | both | 0.08     | (0.4, 0.4, 0.4, 0.1), 0.8 | 0.2    | 0.0    | 0.0        | SimCLR paper, CIFAR-10       |
| crop_only    | both | 0.08     | off                       | 0.0    | 0.0    | 0.0        | ablation                     |
| no_color     | T/T' | as byol  | off                       | 0.0    | as byol| as byol    | ablation of byol             |
| no_blur      | T/T' | as byol  | as byol                   | as byol| 0.0    | as byol    | ablation of byol             |

byol_small has the views of no_blur: solo-learn's CIFAR recipe is the paper's without blur; the
name says it is the recipe for small images, not an ablation.

Blur sigma scales with the view's side (sigma * size / 224) and the kernel covers 3 sigma of the
largest sigma drawn; solarize inverts pixels at or above its threshold (0.5).

`aug_strength` s scales magnitudes, never the probabilities, so 1.0 is exactly the recipe; every
magnitude moves strictly monotonically with s and none reaches its limit:
- crop: minimum area a**s, aspect-ratio range (lo**s, hi**s) (s = 0: always the whole image);
- jitter: brightness, contrast and saturation 1 - (1 - m)**s (the lower factor 1 - m can shrink
  towards 0, never reach it), hue 0.5 - 0.5 * (1 - 2h)**s (stays below half a turn);
- blur: sigma range times s (0: no blur);
- solarize: threshold t**s (0: only white pixels invert, larger s inverts darker ones).
The allowed range [0, MAX_STRENGTH] stops where the smallest crop would fall under
CROP_AREA_FLOOR of the image (0.08**1.82 = 0.01), the first limit any shipped policy meets.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

CROP_AREA_FLOOR = 0.01  # a crop of a tenth of the side: 3 px of a 32 px image
MAX_STRENGTH = 1.8
BLUR_REFERENCE_SIZE = 224  # the side the blur sigmas are given for


@dataclass(frozen=True)
class ViewParams:
    crop_min_area: float = 0.08
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # at BLUR_REFERENCE_SIZE px
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5

    def scaled(self, s: float) -> "ViewParams":
        if s == 1.0:
            return self  # exactly the recipe, bit for bit
        b, c, sat, hue = self.jitter
        return replace(
            self,
            crop_min_area=self.crop_min_area ** s,
            crop_ratio=(self.crop_ratio[0] ** s, self.crop_ratio[1] ** s),
            jitter=(1 - (1 - b) ** s, 1 - (1 - c) ** s, 1 - (1 - sat) ** s, 0.5 - 0.5 * (1 - 2 * hue) ** s),
            blur_sigma=(self.blur_sigma[0] * s, self.blur_sigma[1] * s),
            solarize_threshold=self.solarize_threshold ** s,
        )


BYOL_T = ViewParams(blur_p=1.0, solarize_p=0.0)
BYOL_T_PRIME = ViewParams(blur_p=0.1, solarize_p=0.2)
SIMCLR = ViewParams(jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5, solarize_p=0.0)
NO_COLOUR = dict(jitter_p=0.0, grayscale_p=0.0)

POLICIES: dict[str, tuple[ViewParams, ViewParams]] = {
    "byol": (BYOL_T, BYOL_T_PRIME),
    "simclr": (SIMCLR, SIMCLR),
    "crop_only": (replace(BYOL_T, **NO_COLOUR, blur_p=0.0),) * 2,
    "no_color": (replace(BYOL_T, **NO_COLOUR), replace(BYOL_T_PRIME, **NO_COLOUR)),
    "no_blur": (replace(BYOL_T, blur_p=0.0), replace(BYOL_T_PRIME, blur_p=0.0)),
    # solo-learn's CIFAR BYOL (scripts/pretrain/cifar/byol.yaml -> augmentations/asymmetric.yaml):
    # the paper's views without blur
    "byol_small": (replace(BYOL_T, blur_p=0.0), replace(BYOL_T_PRIME, blur_p=0.0)),
    # SimCLR's CIFAR-10 views (Chen et al. 2020, appendix B.9): no blur, colour strength 0.5
    "simclr_small": (replace(SIMCLR, jitter=(0.4, 0.4, 0.4, 0.1), blur_p=0.0),) * 2,
}


def policy_views(policy: str, strength: float) -> tuple[ViewParams, ViewParams]:
    if policy not in POLICIES:
        raise ValueError(f"augmentation policy {policy!r} is unknown; allowed: {', '.join(POLICIES)}")
    t1, t2 = POLICIES[policy]
    return t1.scaled(strength), t2.scaled(strength)
