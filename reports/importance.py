"""Parameter importances with their uncertainty: rebuild an Optuna study from the full-budget trials and
ask fANOVA, then refit it on bootstrap resamples of the trials (intervals) and on permutations of the
objective (a p-value for the top parameter)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports.load import Sweep

# Fewer full-budget trials than this: no ranking of parameters. fANOVA's forest then splits on single
# trials, so its importances follow individual runs. Measured (20 simulated sweeps per size, 39
# permutations): an objective driven by one of two uniform parameters (effect range 5, noise sd 0.5) gets
# its top permutation p <= 0.05 in 30% of sweeps at 6 trials, 50% at 8, 60% at 10: below 10 even a
# dominant parameter is more often missed than found, so a ranking there would mostly show noise.
MIN_RANK_TRIALS = 10
MIN_PARAMS = 2
N_BOOT = 50  # bootstrap resamples of the trials (descriptive percentile intervals)
N_PERM = 49  # permutations of the objective: p = (1 + count) / 50, so the smallest p is 0.02
FULL_TREES = 64  # Optuna's default forest for the point estimate
REFIT_TREES = 16  # smaller forests for the ~100 refits: about 4x faster (0.05 s per refit at 30 trials)


def distribution(spec: dict, observed: pd.Series):
    """The Optuna distribution of one swept field (one_minus_loguniform is given on 1 - value),
    widened to the observed values so a rounded sample never falls outside it."""
    # here: optuna loads only for a sweep with enough trials to rank
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    kind = spec.get("type")
    if kind in ("choice", "grid"):
        return CategoricalDistribution(list(spec.get("values") or sorted(observed.unique())))
    x = observed.astype(float)
    low, high = float(spec.get("low", x.min())), float(spec.get("high", x.max()))
    if kind == "one_minus_loguniform":
        low, high, x = 1 - high, 1 - low, 1 - x
    low, high = min(low, float(x.min())), max(high, float(x.max()))
    log = kind in ("loguniform", "one_minus_loguniform") and low > 0
    return FloatDistribution(low, high, log=log)


def _value(raw, spec: dict, dist):
    if spec.get("type") in ("choice", "grid"):
        for choice in dist.choices:  # the MLflow string back to the choice it came from
            if str(choice) == str(raw) or _same_number(choice, raw):
                return choice
        return None
    v = float(raw)
    return 1 - v if spec.get("type") == "one_minus_loguniform" else v


def _same_number(a, b) -> bool:
    try:
        return math.isclose(float(a), float(b))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Importances(Mapping):
    """fANOVA importances of one sweep, most important first; as a Mapping, parameter -> point importance
    (so code that wanted the old dict keeps working).

    table: one row per parameter, most important first: parameter, importance (fANOVA on all trials,
        FULL_TREES trees, seed 0; sums to 1), median, low, high (median and percentile interval at `level`
        over n_boot bootstrap resamples of the trials, each refit with REFIT_TREES trees).
    top: the most important parameter; top_p: permutation p-value of its importance (the share, counted
        as (1 + k) / (1 + n_perm), of refits on a permuted objective whose top importance is at least the
        observed one, both with REFIT_TREES trees): small when the objective depends on the parameters
        at all, not small when it is noise.
    n_trials, n_boot (resamples that gave importances), n_perm, level, note.
    """

    table: pd.DataFrame
    top: str
    top_p: float
    n_trials: int
    n_boot: int
    n_perm: int
    level: float
    note: str

    def __getitem__(self, key: str) -> float:
        row = self.table[self.table["parameter"] == key]
        if row.empty:
            raise KeyError(key)
        return float(row["importance"].iloc[0])

    def __iter__(self):
        return iter(self.table["parameter"].tolist())

    def __len__(self) -> int:
        return len(self.table)


def _observations(sweep, fields: list[str], done: pd.DataFrame):
    """(distributions, the trials' params as Optuna values, their objectives); trials whose value cannot be
    mapped back to the space are left out."""
    dists = {f: distribution(sweep.space.get(f, {"type": "choice"}), done[f]) for f in fields}
    params, values = [], []
    for _, row in done.iterrows():
        raw = sweep.raw_params.get(row["trial"], {})
        p = {f: _value(raw.get(f, row[f]), sweep.space.get(f, {"type": "choice"}), dists[f]) for f in fields}
        if any(v is None for v in p.values()):
            continue
        params.append(p)
        values.append(float(row["final_metric"]))
    return dists, params, np.asarray(values, dtype=float)


def _fanova(fields, dists, params, values, direction: str, n_trees: int, seed: int) -> np.ndarray | None:
    """Importances in `fields` order (normalised to sum to 1), or None when fANOVA cannot say (equal values)."""
    import optuna  # here: optuna loads only for a sweep with enough trials to rank

    if len(values) < 2 or np.ptp(values) == 0:
        return None
    study = optuna.create_study(direction=direction)
    study.add_trials([optuna.trial.create_trial(params=p, distributions=dists, value=float(v))
                      for p, v in zip(params, values)])
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=n_trees, seed=seed)
    try:
        imp = optuna.importance.get_param_importances(study, evaluator=evaluator, params=list(fields))
    except (ValueError, ZeroDivisionError, RuntimeError):
        return None
    out = np.array([float(imp.get(f, 0.0)) for f in fields])
    return out if np.all(np.isfinite(out)) else None


def param_importances(sweep: Sweep, n_boot: int = N_BOOT, n_perm: int = N_PERM, level: float = 0.95,
                      seed: int = 0) -> tuple[Importances | None, str]:
    """(Importances, note) of the swept parameters (seed aside) over the sweep's full-budget trials and their
    objective (final_metric); (None, the reason) below MIN_RANK_TRIALS such trials, with fewer than
    MIN_PARAMS varying parameters, or when every objective is equal. Seeded: the same sweep gives the same
    numbers. Cost: about 1 + n_boot + n_perm + 1 fANOVA fits (0.05-0.2 s each for 10-100 trials)."""
    done = sweep.full_budget
    # seed replicates a configuration; an "importance" of it would only measure noise
    fields = [f for f in sweep.swept if f != "seed" and f in done and done[f].nunique(dropna=True) > 1]
    if len(done) < MIN_RANK_TRIALS:
        return None, (f"Too few full-budget trials to rank parameters: importances need at least {MIN_RANK_TRIALS} "
                      f"trials that ran the whole budget; this sweep has {len(done)}.")
    if len(fields) < MIN_PARAMS:
        return None, (f"Importances need at least {MIN_PARAMS} swept parameters (seed aside) that vary across "
                      f"full-budget trials; this sweep has {len(fields)}.")
    dists, params, values = _observations(sweep, fields, done)
    if len(values) < MIN_RANK_TRIALS:
        return None, (f"Too few full-budget trials to rank parameters: importances need at least {MIN_RANK_TRIALS}; "
                      f"{len(values)} of {len(done)} have values inside the swept space.")
    import optuna  # only here: a sweep too small to rank does not pay for importing it

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if sweep.mode == "max" else "minimize"
    point = _fanova(fields, dists, params, values, direction, FULL_TREES, seed)
    if point is None:
        return None, "Importances need full-budget trials whose objective differs; these are all equal."
    rng = np.random.default_rng(seed)
    n = len(values)
    boots = []
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        imp = _fanova(fields, dists, [params[i] for i in idx], values[idx], direction, REFIT_TREES, seed + 1 + b)
        if imp is not None:
            boots.append(imp)
    boots = np.array(boots).reshape(-1, len(fields))
    tail = (1 - level) / 2 * 100
    if len(boots):
        median = np.median(boots, axis=0)
        low, high = np.percentile(boots, [tail, 100 - tail], axis=0)
    else:
        median = low = high = np.full(len(fields), math.nan)
    observed = _fanova(fields, dists, params, values, direction, REFIT_TREES, seed)
    exceed, used = 0, 0
    for k in range(n_perm):
        imp = _fanova(fields, dists, params, rng.permutation(values), direction, REFIT_TREES, seed + 1 + n_boot + k)
        if imp is None or observed is None:
            continue
        used += 1
        exceed += bool(imp.max() >= observed.max() - 1e-12)
    top_p = (1 + exceed) / (1 + used) if used and observed is not None else math.nan
    order = np.argsort(-point, kind="stable")
    table = pd.DataFrame({"parameter": [fields[i] for i in order], "importance": point[order],
                          "median": median[order], "low": low[order], "high": high[order]})
    top = table["parameter"].iloc[0]
    pct = f"{level:.0%}"
    note = (f"fANOVA importances (Optuna, seed {seed}) of {n} full-budget trials' {sweep.metric} at their last "
            f"epoch, with the median and {pct} percentile interval over {len(boots)} bootstrap resamples of the "
            f"trials (descriptive). Top parameter {top}: permutation p = {top_p:.3g} ({used} permutations of the "
            f"objective; the smallest possible p is {1 / (1 + max(used, 1)):.2g}); "
            + ("its importance stands out from noise." if top_p <= 1 - level else
               "its importance does not stand out from what a pure-noise objective gives, so the ranking "
               "may be noise."))
    result = Importances(table=table, top=top, top_p=float(top_p), n_trials=n, n_boot=len(boots), n_perm=used,
                         level=level, note=note)
    return result, note
