"""The augmentation policies as plain data (no torch): the two views (T, T') each policy draws.

A policy is data: two views, each an ordered mapping of ops to their parameters and probabilities
(OPS lists every op, its parameters and defaults), in the same format for the shipped policies
(DEFINITIONS below) and a user's own, which may start from a shipped one and override parts:

    mine: {from: byol_small, T_prime: {solarize: {p: 0.4}}, T: {erase: {p: 0.25}}}

An op set to null (or false) is removed from that view. parse_policies checks every field and says
which key is wrong and what is allowed. view_params turns one view into the ViewParams the batched
ops in trainer/augment.py read.

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
- solarize: threshold t**s (0: only white pixels invert, larger s inverts darker ones);
- erase: the erased area range times s (0: nothing erased; its aspect range is not a magnitude);
- equalize: has no magnitude; the strength leaves it as it is.
The allowed range [0, MAX_STRENGTH] stops where the smallest crop would fall under
CROP_AREA_FLOOR of the image (0.08**1.82 = 0.01), the first limit any shipped policy meets.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

CROP_AREA_FLOOR = 0.01  # a crop of a tenth of the side: 3 px of a 32 px image
MAX_STRENGTH = 1.8
BLUR_REFERENCE_SIZE = 224  # the side the blur sigmas are given for
DEFAULT_ORDER = ("crop", "flip", "color_jitter", "grayscale", "blur", "solarize")
VIEWS = ("T", "T_prime")


class PolicyError(ValueError):
    """A policy definition is invalid; the message names the policy, the key and what is allowed."""


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
    crop_max_area: float = 1.0
    equalize_p: float = 0.0
    erase_p: float = 0.0
    erase_scale: tuple[float, float] = (0.02, 0.33)  # erased area, as a fraction of the view
    erase_ratio: tuple[float, float] = (0.3, 3.3)
    erase_value: float = 0.0
    ops: tuple[str, ...] = DEFAULT_ORDER  # the order the ops run in; an op not listed does not run

    def scaled(self, s: float) -> "ViewParams":
        if s == 1.0:
            return self  # exactly the recipe, bit for bit
        b, c, sat, hue = self.jitter
        return replace(
            self,
            crop_min_area=self.crop_min_area ** s,
            crop_max_area=self.crop_max_area ** s,
            crop_ratio=(self.crop_ratio[0] ** s, self.crop_ratio[1] ** s),
            jitter=(1 - (1 - b) ** s, 1 - (1 - c) ** s, 1 - (1 - sat) ** s, 0.5 - 0.5 * (1 - 2 * hue) ** s),
            blur_sigma=(self.blur_sigma[0] * s, self.blur_sigma[1] * s),
            solarize_threshold=self.solarize_threshold ** s,
            erase_scale=(self.erase_scale[0] * s, self.erase_scale[1] * s),
        )


@dataclass(frozen=True)
class Param:
    default: Any
    kind: str  # "p" (a probability), "number", "range" (low <= high)
    low: float
    high: float
    doc: str


def _p(default: float) -> Param:
    return Param(default, "p", 0.0, 1.0, "probability")


# every op a view may use: its parameters, their defaults and allowed values, and how aug_strength scales it
OPS: dict[str, dict[str, Param]] = {
    "crop": {"scale": Param([0.08, 1.0], "range", CROP_AREA_FLOOR, 1.0, "area fraction range (scaled: a**s)"),
             "ratio": Param([3 / 4, 4 / 3], "range", 0.1, 10.0, "aspect ratio range (scaled: r**s)")},
    "flip": {"p": _p(0.5)},
    "color_jitter": {"p": _p(0.8),
                     "brightness": Param(0.4, "number", 0.0, 1.0, "factor in [1-m, 1+m] (scaled: 1-(1-m)**s)"),
                     "contrast": Param(0.4, "number", 0.0, 1.0, "factor in [1-m, 1+m] (scaled: 1-(1-m)**s)"),
                     "saturation": Param(0.2, "number", 0.0, 1.0, "factor in [1-m, 1+m] (scaled: 1-(1-m)**s)"),
                     "hue": Param(0.1, "number", 0.0, 0.49, "shift in [-m, m] of a turn (scaled)")},
    "grayscale": {"p": _p(0.2)},
    "blur": {"p": _p(1.0), "sigma": Param([0.1, 2.0], "range", 0.0, 20.0, "sigma range at 224 px (scaled: x s)")},
    "solarize": {"p": _p(0.2), "threshold": Param(0.5, "number", 0.0, 1.0, "invert at or above (scaled: t**s)")},
    "equalize": {"p": _p(0.2)},
    "erase": {"p": _p(0.5), "scale": Param([0.02, 0.33], "range", 0.0, 1 / MAX_STRENGTH, "erased area range (x s)"),
              "ratio": Param([0.3, 3.3], "range", 0.01, 100.0, "aspect ratio range of the erased box"),
              "value": Param(0.0, "number", 0.0, 1.0, "the erased pixels' value")},
}

_BYOL_T = {"crop": {"scale": [0.08, 1.0], "ratio": [3 / 4, 4 / 3]}, "flip": {"p": 0.5},
           "color_jitter": {"p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1},
           "grayscale": {"p": 0.2}, "blur": {"p": 1.0, "sigma": [0.1, 2.0]}}
_BYOL_T_PRIME = {**_BYOL_T, "blur": {"p": 0.1, "sigma": [0.1, 2.0]}, "solarize": {"p": 0.2, "threshold": 0.5}}
_SIMCLR = {**_BYOL_T, "color_jitter": {"p": 0.8, "brightness": 0.8, "contrast": 0.8, "saturation": 0.8, "hue": 0.2},
           "blur": {"p": 0.5, "sigma": [0.1, 2.0]}}

# The shipped policies, in the format a user writes (see the table in this module's docstring).
DEFINITIONS: dict[str, dict[str, Any]] = {
    "byol": {"T": _BYOL_T, "T_prime": _BYOL_T_PRIME},
    "simclr": {"T": _SIMCLR, "T_prime": _SIMCLR},
    "crop_only": {"from": "byol", "T": {"color_jitter": None, "grayscale": None, "blur": None},
                  "T_prime": {"color_jitter": None, "grayscale": None, "blur": None, "solarize": None}},
    "no_color": {"from": "byol", "T": {"color_jitter": None, "grayscale": None},
                 "T_prime": {"color_jitter": None, "grayscale": None}},
    "no_blur": {"from": "byol", "T": {"blur": None}, "T_prime": {"blur": None}},
    # solo-learn's CIFAR BYOL (scripts/pretrain/cifar/byol.yaml -> augmentations/asymmetric.yaml):
    # the paper's views without blur
    "byol_small": {"from": "byol", "T": {"blur": None}, "T_prime": {"blur": None}},
    # SimCLR's CIFAR-10 views (Chen et al. 2020, appendix B.9): no blur, colour strength 0.5
    "simclr_small": {"from": "simclr", "T": {"color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4,
                                                              "hue": 0.1}, "blur": None},
                     "T_prime": {"color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
                                 "blur": None}},
}


def _fail(where: str, message: str) -> PolicyError:
    return PolicyError(f"{where.rstrip(':')}: {message}")


def _check_param(where: str, param: Param, value: Any) -> Any:
    def number(v) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _fail(where, f"expected a number, got {v!r}")
        if not param.low <= v <= param.high:
            raise _fail(where, f"{v!r} is outside [{param.low:g}, {param.high:g}] ({param.doc})")
        return float(v)

    if param.kind == "range":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise _fail(where, f"expected [low, high], got {value!r}")
        low, high = number(value[0]), number(value[1])
        if low > high:
            raise _fail(where, f"range [{value[0]}, {value[1]}] is inverted; low must not exceed high")
        return (low, high)
    return number(value)


def _check_view(where: str, view: Any, derived: bool = False) -> dict[str, dict[str, Any]]:
    """A view's ops, each with every parameter given or defaulted, in order; raises PolicyError. A view
    derived from another by removals may be left with no op (the whole image, resized)."""
    if not isinstance(view, dict) or not (view or derived):
        raise _fail(where, f"expected a mapping of ops to their parameters; allowed ops: {', '.join(OPS)}")
    out = {}
    for position, (op, params) in enumerate(view.items()):
        if op not in OPS:
            raise _fail(f"{where}.{op}", f"unknown op; allowed: {', '.join(OPS)}")
        if op == "crop" and position != 0:
            raise _fail(f"{where}.crop", "the crop must be a view's first op (it sets the view's size)")
        if params is None or params is True:
            params = {}
        if not isinstance(params, dict):
            raise _fail(f"{where}.{op}", f"expected a mapping of its parameters ({', '.join(OPS[op])}), got {params!r}")
        for key in params:
            if key not in OPS[op]:
                raise _fail(f"{where}.{op}.{key}", f"unknown parameter of {op}; allowed: {', '.join(OPS[op])}")
        out[op] = {key: _check_param(f"{where}.{op}.{key}", spec, params.get(key, spec.default))
                   for key, spec in OPS[op].items()}
    return out


def _merged(base: dict, overrides: Any, where: str) -> dict:
    if not isinstance(overrides, dict):
        raise _fail(where, f"expected a mapping of ops to overrides (null removes an op); allowed ops: {', '.join(OPS)}")
    out = {op: dict(params or {}) for op, params in base.items()}
    for op, params in overrides.items():
        if params is None or params is False:
            out.pop(op, None)
        elif isinstance(params, dict):
            out[op] = {**out.get(op, {}), **params}
        else:
            out[op] = params  # _check_view says what is wrong with it
    return out


def _key(root: str, name: str) -> str:
    """How a message names a policy: `policies.<name>` in a space, `<file>: <name>` in a policy file."""
    return f"{root} {name}" if root.endswith(":") else f"{root}.{name}"


def resolve(name: str, definitions: dict[str, Any], root: str = "policies", seen: tuple[str, ...] = ()) -> dict[str, dict]:
    """One policy's two views, `from:` followed and overrides applied, every field checked:
    {"T": {op: params}, "T_prime": {op: params}}. `definitions`: the user's own (a shipped name is
    looked up among DEFINITIONS)."""
    own = name in definitions
    definition = definitions[name] if own else DEFINITIONS.get(name)
    where = _key(root, name) if own else f"policy {name}"
    if not isinstance(definition, dict):
        raise _fail(where, f"expected a mapping with T and T_prime (or from: a policy), got {definition!r}")
    for key in definition:
        if key not in ("from", *VIEWS):
            raise _fail(f"{where}.{key}", f"unknown key; allowed: from, {', '.join(VIEWS)}")
    parent = definition.get("from")
    if parent is None:
        missing = [v for v in VIEWS if v not in definition]
        if missing:
            raise _fail(where, f"{' and '.join(missing)} missing; give both views, or start from a policy (from: byol)")
        return {v: _check_view(f"{where}.{v}", definition[v]) for v in VIEWS}
    known = sorted({*DEFINITIONS, *definitions})
    if not isinstance(parent, str) or parent not in known or parent == name:
        raise _fail(f"{where}.from", f"{parent!r} is not a policy; allowed: {', '.join(n for n in known if n != name)}")
    if parent in seen:
        raise _fail(f"{where}.from", f"policies derive from each other in a loop ({' -> '.join((*seen, name, parent))})")
    base = resolve(parent, definitions if parent in definitions else {}, root, (*seen, name))
    return {v: _check_view(f"{where}.{v}", _merged(base[v], definition.get(v, {}), f"{where}.{v}"), derived=True)
            for v in VIEWS}


def parse_policies(definitions: Any, where: str = "policies") -> dict[str, dict[str, dict]]:
    """A user's policies ({name: definition}) resolved and checked; a name may not reuse a shipped one.
    `where` prefixes each key in a message: `policies` (policies.<name>...) or `<file>:` (<file>: <name>...)."""
    if not isinstance(definitions, dict):
        raise _fail(where, "expected a mapping of policy names to definitions")
    out = {}
    for name in definitions:
        key = _key(where, str(name))
        if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise _fail(key, "a policy's name is letters, digits, _ and -")
        if name in DEFINITIONS:
            raise _fail(key, f"is a shipped policy's name; choose another (shipped: {', '.join(DEFINITIONS)})")
        out[name] = resolve(name, definitions, where)
    return out


def view_params(ops: dict[str, dict]) -> ViewParams:
    """The ViewParams of one resolved view: what trainer/augment.py reads, in the view's op order."""
    def get(op, key, default):
        return ops[op][key] if op in ops else default

    jitter = ops.get("color_jitter")
    return ViewParams(
        crop_min_area=get("crop", "scale", (0.08, 1.0))[0], crop_max_area=get("crop", "scale", (0.08, 1.0))[1],
        crop_ratio=tuple(get("crop", "ratio", (3 / 4, 4 / 3))), flip_p=get("flip", "p", 0.0),
        jitter=(jitter["brightness"], jitter["contrast"], jitter["saturation"], jitter["hue"]) if jitter else (0.0,) * 4,
        jitter_p=get("color_jitter", "p", 0.0), grayscale_p=get("grayscale", "p", 0.0),
        blur_p=get("blur", "p", 0.0), blur_sigma=tuple(get("blur", "sigma", (0.1, 2.0))),
        solarize_p=get("solarize", "p", 0.0), solarize_threshold=get("solarize", "threshold", 0.5),
        equalize_p=get("equalize", "p", 0.0), erase_p=get("erase", "p", 0.0),
        erase_scale=tuple(get("erase", "scale", (0.02, 0.33))), erase_ratio=tuple(get("erase", "ratio", (0.3, 3.3))),
        erase_value=get("erase", "value", 0.0), ops=tuple(ops),
    )


SHIPPED: dict[str, dict[str, dict]] = {name: resolve(name, {}) for name in DEFINITIONS}
POLICIES: dict[str, tuple[ViewParams, ViewParams]] = {
    name: (view_params(views["T"]), view_params(views["T_prime"])) for name, views in SHIPPED.items()}


def user_policies(text: str) -> dict[str, dict[str, dict]]:
    """TrainConfig.policies (JSON of {name: definition}) resolved; "" gives none."""
    if not text:
        return {}
    try:
        return parse_policies(json.loads(text), "policies")
    except json.JSONDecodeError as err:
        raise PolicyError(f"policies: not valid JSON ({err})") from None


def definition(policy: str, policies_json: str = "", params_json: str = "") -> dict[str, dict]:
    """The resolved views of a policy: a shipped one, or one of the user's (TrainConfig.policies), with
    the values of its searched parameters (TrainConfig.policy_params) set."""
    if policy in SHIPPED:
        views = SHIPPED[policy]
    else:
        own = user_policies(policies_json)
        if policy not in own:
            raise PolicyError(f"augmentation policy {policy!r} is unknown; allowed: {', '.join([*SHIPPED, *own])}")
        views = own[policy]
    return with_params(views, json.loads(params_json) if params_json else {}, policy) if params_json else views


DIMENSION = "policy."  # a searched op parameter: policy.<T|T_prime>.<op>.<parameter>[.low|.high]


def dimension(name: str) -> Param:
    """The Param a dotted name such as policy.T_prime.solarize.p sets; raises PolicyError saying what
    is allowed. A range parameter is searched by its ends: policy.T.crop.scale.low (or .high)."""
    parts = name[len(DIMENSION):].split(".") if name.startswith(DIMENSION) else []
    if len(parts) not in (3, 4) or parts[0] not in VIEWS:
        raise PolicyError(f"{name}: a policy dimension is policy.<view>.<op>.<parameter> with view "
                          f"{' or '.join(VIEWS)}, e.g. policy.T_prime.solarize.p")
    view, op, key = parts[:3]
    if op not in OPS:
        raise PolicyError(f"{name}: unknown op {op!r}; allowed: {', '.join(OPS)}")
    if key not in OPS[op]:
        raise PolicyError(f"{name}: unknown parameter {key!r} of {op}; allowed: {', '.join(OPS[op])}")
    param = OPS[op][key]
    if (param.kind == "range") != (len(parts) == 4) or (len(parts) == 4 and parts[3] not in ("low", "high")):
        form = f"policy.{view}.{op}.{key}.low or .high" if param.kind == "range" else f"policy.{view}.{op}.{key}"
        raise PolicyError(f"{name}: {op}.{key} is {'a range: search its ends' if param.kind == 'range' else 'a number'}"
                          f"{'' if param.kind == 'range' else ': search it'} as {form}")
    return param


def with_params(views: dict[str, dict], values: dict[str, float], policy: str) -> dict[str, dict]:
    """views with each policy.<view>.<op>.<parameter> value set (an op the view lacks is added with its
    defaults, after the others); the result is checked as a definition is."""
    out = {v: {op: dict(params) for op, params in views[v].items()} for v in VIEWS}
    for name, value in sorted(values.items()):
        dimension(name)
        view, op, key, *end = name[len(DIMENSION):].split(".")
        params = out[view].setdefault(op, {})
        if end:
            low, high = params.get(key, OPS[op][key].default)
            params[key] = [value, high] if end[0] == "low" else [low, value]
        else:
            params[key] = value
    return {v: _check_view(f"policy {policy} with {', '.join(sorted(values))}: {v}", out[v], derived=True)
            for v in VIEWS}


def policy_views(policy: str, strength: float, policies_json: str = "",
                 params_json: str = "") -> tuple[ViewParams, ViewParams]:
    views = definition(policy, policies_json, params_json)
    return view_params(views["T"]).scaled(strength), view_params(views["T_prime"]).scaled(strength)


def ablation_variants(policy: str, policies_json: str = "") -> dict[str, dict[str, Any]]:
    """The leave-one-op-out variants of a policy, as definitions: for each op of either view (in the
    order they first appear), `<policy>-no_<op>`, the policy with that op removed from both views."""
    views = definition(policy, policies_json)
    ops = list(dict.fromkeys([*views["T"], *views["T_prime"]]))
    return {f"{policy}-no_{op}": {"from": policy, "T": {op: None}, "T_prime": {op: None}} for op in ops}
