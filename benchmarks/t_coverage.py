"""How often the report's paired Student-t 95% interval covers the true mean difference, by
simulation, for normal and for strongly skewed (centred lognormal, sigma 1) differences across seeds.

    python benchmarks/t_coverage.py [--sims 100000]

prints one JSON object: coverage per distribution and number of seeds. The README's "What a sweep
concludes" quotes it.
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np

from reports.stats import paired_t


def coverage(draw, n: int, sims: int) -> float:
    r = paired_t(draw((sims, n)))
    return float(np.mean((r["low"] <= 0) & (0 <= r["high"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    draws = {"normal": lambda shape: rng.normal(0.0, 0.01, shape),
             "centred lognormal": lambda shape: rng.lognormal(0.0, 1.0, shape) - math.exp(0.5)}
    print(json.dumps({name: {f"n={n}": round(coverage(draw, n, args.sims), 4) for n in (3, 5, 10)}
                      for name, draw in draws.items()}, indent=1))


if __name__ == "__main__":
    main()
