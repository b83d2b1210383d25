"""Numbers as the report shows them: every format of a metric, a p-value, a config value or an interval."""
from __future__ import annotations

import math

import numpy as np

DASH = "–"  # a missing value
NO_INTERVAL = "no interval"


def _number_or_none(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def num(x, digits: int = 4) -> str:
    """A metric for display: fixed decimals, or a dash when missing."""
    x = _number_or_none(x)
    return DASH if x is None else f"{x:.{digits}f}"


def sig(x, digits: int = 5) -> str:
    """A hyperparameter's value for display: significant digits, or a dash when missing."""
    x = _number_or_none(x)
    return DASH if x is None else f"{x:.{digits}g}"


def bounds(low, high, digits: int = 4) -> str:
    """"[low, high]" of an interval, each as num."""
    return f"[{num(low, digits)}, {num(high, digits)}]"


def p_value(p) -> str:
    """A p-value for display: three decimals, or "< 0.001" where those would read 0.000."""
    text = num(p, 3)
    return "< 0.001" if text == "0.000" else text


def p_relation(p) -> str:
    """"= 0.089" or "< 0.001": a p-value to follow "p" in a sentence."""
    text = p_value(p)
    return text if text.startswith("<") else f"= {text}"


def value(v) -> str:
    """A config value for display: 5 significant digits for floats, as-is otherwise."""
    if isinstance(v, (float, np.floating)):
        return DASH if math.isnan(v) else f"{v:.5g}"
    return str(v)


def category(v) -> str:
    """One label per choice value whether it came as 0, 0.0 or "0"."""
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    try:
        return f"{float(v):g}"
    except (TypeError, ValueError):
        return str(v)


def mean_interval(mean: float, low: float, high: float, n: int, digits: int = 4) -> str:
    """mean [low, high] (n = n), for prose: a dash without a mean, no brackets without an interval."""
    if not np.isfinite(mean):
        return DASH
    if not np.isfinite(low):
        return f"{mean:.{digits}f} (n = {n}: no interval)"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}] (n = {n})"


def arm_interval(mean: float, low: float, high: float, n: int, digits: int = 4) -> str:
    """mean [low, high], for a table that gives n in a column of its own (compare_arms' interval)."""
    if not np.isfinite(mean):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{mean:.{digits}f} ({NO_INTERVAL}, n = {n})"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def duration(seconds: float | None) -> str:
    """A wall time for display: "1 h 05 min", "3 min 07 s", "2 d 4 h"."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "unknown"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h >= 48:
        return f"{h // 24} d {h % 24} h"
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {s:02d} s"
    return f"{s} s"
