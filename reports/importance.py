"""Parameter importances: rebuild an Optuna study from the finished trials and ask fANOVA."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.load import Sweep

MIN_TRIALS = 4
MIN_PARAMS = 2


def distribution(spec: dict, observed: pd.Series):
    """The Optuna distribution of one swept field (one_minus_loguniform is given on 1 - value),
    widened to the observed values so a rounded sample never falls outside it."""
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


def param_importances(sweep: Sweep) -> tuple[dict[str, float] | None, str]:
    """({field: importance}, note); None with the reason when there is too little to go on."""
    done = sweep.full_budget
    # seed replicates a configuration; an "importance" of it would only measure noise
    fields = [f for f in sweep.swept if f != "seed" and f in done and done[f].nunique(dropna=True) > 1]
    if len(done) < MIN_TRIALS:
        return None, f"Importances need at least {MIN_TRIALS} finished trials; this sweep has {len(done)}."
    if len(fields) < MIN_PARAMS:
        return None, (f"Importances need at least {MIN_PARAMS} swept parameters (seed aside) that vary across "
                      f"finished trials; this sweep has {len(fields)}.")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {f: distribution(sweep.space.get(f, {"type": "choice"}), done[f]) for f in fields}
    study = optuna.create_study(direction="maximize" if sweep.mode == "max" else "minimize")
    for _, row in done.iterrows():
        raw = sweep.raw_params.get(row["trial"], {})
        params = {f: _value(raw.get(f, row[f]), sweep.space.get(f, {"type": "choice"}), dists[f]) for f in fields}
        if any(v is None for v in params.values()):
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(row["final_metric"])))
    if len(study.trials) < MIN_TRIALS or np.ptp([t.value for t in study.trials]) == 0:
        return None, "Importances need finished trials whose metric differs; these are all equal."
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {k: float(v) for k, v in imp.items()}, (
        f"fANOVA importances (Optuna, seed 0) of {len(study.trials)} finished trials' best {sweep.metric}."
    )
