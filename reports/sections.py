"""The report's sections as blocks: what each section says about a sweep, and the comparison."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from reports import figures, pbt, summary
from reports.importance import param_importances
from reports.load import Sweep
from reports.render import Code, Heading, Image, Para, Table
from reports.stats import beats_baseline, binomial_interval, compare_arms, t_interval, within_noise
from vocabulary import COLLAPSE_RANK, COLLAPSE_SPREAD, FINISHED, RUNTIME_FIELDS, asha_rungs, collapsed

TOP = 5
COLLAPSE_Z_STD = 0.01
FIXED_TARGET_TAU = 1.0  # tau_base that never moves the target: the paper's fixed random target
FIXED_TARGET_NOTE = ("tau_base 1.0 never moves the target network: it is a fixed random target, BYOL's control (the "
                     "paper's ablation of the target decay rate). A moving target that does not clearly beat it has "
                     "not shown the bootstrap at work.")


def num(x, digits: int = 4) -> str:
    """A metric for display: fixed decimals, or a dash when missing."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


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
        return "–" if math.isnan(v) else f"{v:.5g}"
    return str(v)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "sweep"


def title(sweeps: list[Sweep]) -> str:
    running = " (still running)" if any(s.running for s in sweeps) else ""
    if len(sweeps) == 1:
        return f"Sweep report: {sweeps[0].name}{running}"
    return "Sweep comparison: " + " vs ".join(s.experiment for s in sweeps) + running


def document(sweeps: list[Sweep]) -> list:
    if len(sweeps) == 1:
        return sweep_blocks(sweeps[0], prefix="", level=2)
    ylim = figures.shared_limits(sweeps)
    out = comparison_blocks(sweeps)
    for s in sweeps:  # one after the other at full width: nothing squeezed into a column
        out += [Heading(s.experiment, 2)] + sweep_blocks(s, prefix=slug(s.experiment) + "_", level=3, ylim=ylim)
    return out


def sweep_blocks(s: Sweep, prefix: str, level: int, ylim: tuple[float, float] | None = None) -> list:
    best = summary.best_trial(s)
    best_name = None if best is None else best["trial"]
    imp, imp_note = param_importances(s)
    return (result_section(s, level) + summary_section(s, level) + best_section(s, level, best)
            + curves_section(s, level, prefix, best_name, ylim)
            + (pbt.pbt_section(s, level, prefix) if s.scheduler == "pbt" else [])
            + search_section(s, level, prefix, imp) + sensitivity_section(s, level, prefix, imp, imp_note)
            + comparisons_section(s, level, prefix) + health_section(s, level, prefix))


def interval(values, digits: int = 4) -> str:
    """mean [Student-t 95% interval] (n) of the finite values."""
    mean, low, high = t_interval(values)
    n = int(np.isfinite(np.asarray(values, dtype=float)).sum())
    if not np.isfinite(mean):
        return "–"
    if not np.isfinite(low):
        return f"{mean:.{digits}f} (n = {n}: no interval)"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}] (n = {n})"


def swept_values(s: Sweep, row) -> str:
    return ", ".join(f"{c}={value(row[c])}" for c in summary.varied_columns(s) if c != "seed" and c in row) or "–"


def result_section(s: Sweep, level: int) -> list:
    """The headline: the final stage's test result, beside the baselines and the metric's noise."""
    out = [Heading("Result", level)]
    f = s.finals_done
    if is_comparison_sweep(s):
        return out + comparison_headline(s)
    if f.empty:
        best = summary.best_trial(s)
        if best is None:
            return out + [Para("No trial ran the full budget with a finite metric: there is no result.", note=True)]
        why = ("the final stage has not completed" if len(s.finals)
               else "this sweep ran no final stage")
        out.append(Para(f"Best search value: {s.metric} {num(best['final_metric'])} ({best['trial']}: "
                        f"{swept_values(s, best)}), on the {summary.eval_split(s)}. It is the best of "
                        f"{len(s.full_budget)} full-budget trials on one seed and one validation split, so it is "
                        f"optimistic; {why}. Re-train it on new seeds and the test split with "
                        f"`byol-sweep finalize {s.name}`.", note=True))
        return out + baseline_blocks(s, summary.search_split(s), [float(best["final_metric"])], [float(best["linear_probe_acc"])])
    groups = final_groups(s)
    per = s.final_per
    rows = []
    for group, rank, g in groups:
        first = g.iloc[0]
        row = {}
        if per:
            row[per] = group
        row.update({"rank in search": str(rank), "trial re-trained": str(first["final_source_trial"]),
                    "configuration": swept_values(s, first),
                    f"search {s.metric} (val)": num(first["final_source_value"]),
                    f"test {s.metric} [95% CI]": interval(g["final_metric"]),
                    "test linear probe [95% CI]": interval(g["linear_probe_acc"])})
        rows.append(row)
    lead_group, _, lead = lead_final_group(s, groups)
    first = lead.iloc[0]
    seeds = sorted(int(v) for v in lead["seed"].dropna())
    label = f"{per} {lead_group}: " if per else ""
    out.append(Para(f"Selected configuration ({label}trial {first['final_source_trial']}, "
                    f"{swept_values(s, first)}): test {s.metric} {interval(lead['final_metric'])}, the mean over "
                    f"{len(lead)} new seed(s) ({', '.join(map(str, seeds))}) with a Student-t 95% interval, "
                    f"trained for the full budget and measured on the whole test split; its value in the "
                    f"search was {num(first['final_source_value'])} on the validation split (the best of "
                    f"{len(s.full_budget)} full-budget trials on one seed: optimistic)."))
    out.append(Table(pd.DataFrame(rows)))
    if len(s.finals) > len(f):
        out.append(Para(f"{len(s.finals) - len(f)} final-stage run(s) did not complete and are left out.", note=True))
    out += baseline_blocks(s, "test", list(lead["final_metric"].astype(float)), list(lead["linear_probe_acc"].astype(float)))
    if per and len(groups) > 1:
        comparison = compare_arms(f[f["final_rank"] == 1], per, mode=s.mode, pair="seed")
        notes = [n for n in comparison.notes if "were not checked" not in n]
        out.append(Para(f"Each {per} re-trained with its own tuned best configuration on the same seeds, so the "
                        f"{per}s are compared at equal tuning budget (their other fields differ on purpose)."))
        out += comparison_blocks_of(comparison, s.metric, notes)
    return out


def final_groups(s: Sweep) -> list[tuple[str, int, pd.DataFrame]]:
    """(group, rank in the search, its completed final runs) of each configuration re-trained."""
    return [(group, int(rank), g) for (group, rank), g in s.finals_done.groupby(["final_group", "final_rank"], sort=True)]


def lead_final_group(s: Sweep, groups: list[tuple[str, int, pd.DataFrame]]) -> tuple[str, int, pd.DataFrame]:
    """The selected configuration: the best mean over its new seeds (the search's rank breaks ties)."""
    return min(groups, key=lambda x: (-float(np.mean(x[2]["final_metric"])) if s.mode == "max"
                                      else float(np.mean(x[2]["final_metric"])), x[1]))


def result_lines(s: Sweep) -> list[str]:
    """The final stage's result in a few console lines: the selected configuration's test values
    over the new seeds and which baselines they beat (the report's Result, in short)."""
    if is_comparison_sweep(s):
        lines = []
        for field in compared_fields(s):
            for value, what in (("final_metric", s.metric), ("linear_probe_acc", "linear probe")):
                c = comparison_of(s, field, value)
                if _compared(c):
                    arms, diffs = comparison_texts(c)
                    lines.append(f"result on the {summary.search_split(s)} split, {what} by {field}: {arms}; "
                                 f"paired by seed: {diffs}")
        return lines
    if s.finals_done.empty:
        return []
    _, _, lead = lead_final_group(s, final_groups(s))
    n = s.queries("test")
    lines = [f"result on the test split, {len(lead)} new seed(s): {s.metric} {interval(lead['final_metric'])}, "
             f"linear probe {interval(lead['linear_probe_acc'])} ({swept_values(s, lead.iloc[0])})"]
    for values, suffix, what in ((lead["final_metric"], "", s.metric), (lead["linear_probe_acc"], "_probe", "linear probe")):
        trained = [float(v) for v in values if np.isfinite(v)]
        features = [(key + suffix, label) for key, label in BASELINE_FEATURES]
        verdicts = baseline_verdicts(s, "test", n, trained, features) if n and trained else []
        if verdicts:
            lines.append(f"  {what} minus baselines: " + "; ".join(
                f"{label} {d:+.4f} [{num(low)}, {num(high)}] {'beaten' if low > 0 else 'NOT beaten'}"
                for label, d, low, high in verdicts))
    return lines


BASELINE_FEATURES = (("raw_pixels", "raw pixels"), ("untrained", "the untrained encoder"),
                     ("untrained_bn", "the untrained encoder, BatchNorm statistics calibrated"))
BASELINES = tuple((key, f"kNN on {what}") for key, what in BASELINE_FEATURES)
PROBE_BASELINES = tuple((f"{key}_probe", f"linear probe on {what}") for key, what in BASELINE_FEATURES)


def baseline_blocks(s: Sweep, split: str, trained: list[float], probe: list[float] | None = None) -> list:
    """kNN on raw pixels and on the untrained encoder, with binomial intervals, and whether the
    trained value beat every one of them by more than that noise; then the same for the linear
    probe, when the trained runs have one and its baselines were measured."""
    n = s.queries(split)
    if n is None or s.baseline("raw_pixels", split) is None:
        return [Para(f"No baselines were measured on the {split} split (a sweep older than baselines, or their "
                     "measurement failed): whether training helped cannot be said.", note=True)]
    out = [Para(f"Baselines on the {split} split, on the same kNN bank and {n} queries; the interval is the "
                f"metric's own noise (Clopper-Pearson over {n} queries: one query is {1 / n:.4f}). Calibrating "
                "BatchNorm's running statistics changes no weight: what training gains beyond it is learning.")]
    out += _against_baselines(s, split, n, trained, BASELINES, s.metric)
    probe = [v for v in (probe or []) if np.isfinite(v)]
    if probe and s.baseline("raw_pixels_probe", split) is not None:
        out.append(Para(f"The same for the linear probe (a logistic regression fitted on the bank's frozen features "
                        f"and scored on the same {n} queries, as each trained run's), with the same intervals and "
                        "test: a second view of what the features hold, less tied to the distances kNN reads."))
        out += _against_baselines(s, split, n, probe, PROBE_BASELINES, "linear probe", explain=False)
    return out


def baseline_verdicts(s: Sweep, split: str, n: int, trained: list[float], baselines) -> list[tuple[str, float, float, float]]:
    """(label, trained − baseline, low, high) for each measured baseline; beaten when low > 0."""
    return [(label, *beats_baseline(trained, s.baseline(key, split), n))
            for key, label in baselines if s.baseline(key, split) is not None]


def _against_baselines(s: Sweep, split: str, n: int, trained: list[float], baselines, metric: str,
                       explain: bool = True) -> list:
    rows = []
    for key, label in baselines:
        v = s.baseline(key, split)
        if v is not None:
            low, high = binomial_interval(v, n)
            rows.append({"baseline": label, f"{metric} [95% binomial CI]": f"{num(v)} [{num(low)}, {num(high)}]"})
    out = [Table(pd.DataFrame(rows))]
    rows_vs = baseline_verdicts(s, split, n, trained, baselines)
    out.append(Table(pd.DataFrame({
        "trained − baseline": [label for label, *_ in rows_vs],
        "difference [95% CI]": [f"{num(d)} [{num(lo)}, {num(hi)}]" for _, d, lo, hi in rows_vs],
        "beaten": ["yes" if lo > 0 else "no" for _, _, lo, _ in rows_vs]})))
    if explain:
        how = ("its spread over the seeds (Student-t)" if len(trained) >= 2 else "its own binomial noise")
        out.append(Para(f"Each difference's interval counts both noises: the trained value's ({how}) and the "
                        "baseline's (binomial over the queries), combined by Welch-Satterthwaite; a baseline is "
                        "beaten when the interval lies above 0 (tests/test_reports_stats.py checks its "
                        "false-positive rate by simulation)."))
    lost = [label for label, _, low, _ in rows_vs if not low > 0]
    if not lost:
        on = metric if metric == s.metric else f"the {metric}"
        return out + [Para(f"Training helped: on {on} it beat every baseline by more than the noise.")]
    return out + [Para(f"Training did not clearly beat: {'; '.join(lost)}.", note=True)]


def summary_rows(s: Sweep) -> list[tuple[str, str]]:
    counts = summary.status_counts(s)
    best = summary.best_trial(s)
    gpu = summary.gpu_hours(s)
    asha = s.asha
    state = "still running" if s.running else s.state
    search = s.params.get("search", "?")
    if search == "optuna":
        startup = s.params.get("optuna.n_startup_trials")
        search = ("optuna (TPE, multivariate, constant liar" + (f"; its first {startup} trials random start-up"
                  if startup else "") + ")")
    f = s.finals
    rows = [
        ("Experiment", s.experiment),
        ("Sweep", s.name),
        ("State", state),
        ("Dataset", summary.config_value(s, "dataset")),
        ("Backbone", summary.config_value(s, "backbone")),
        ("Objective", f"{s.metric} ({s.mode}) at a trial's last epoch"),
        ("Search evaluated on", summary.eval_split(s)),
        ("Search", f"{search}, num_samples {s.params.get('num_samples', '?')}"),
        ("ASHA", f"grace {asha[0]}, reduction factor {asha[1]}, max {asha[2]} epochs" if asha else "none"),
        ("Swept", ", ".join(s.swept) or "none"),
        ("Trials", str(len(s.trials))),
    ]
    rows += [(status, str(n)) for status, n in counts.items()]
    rows += [
        ("Best search value (full budget)", f"{num(best['final_metric'])} ({best['trial']})" if best is not None
         else ("none yet" if s.running else "none")),
        ("Final-stage runs", f"{len(s.finals_done)} completed of {len(f)}" if len(f) else "none"),
        ("Compute (trial-hours)", f"{(summary.trial_hours(s) + float(f['compute_s'].sum()) / 3600 if len(f) else summary.trial_hours(s)):.2f}"),
        ("GPU-hours", f"{gpu:.2f}" if gpu is not None else "no GPUs used"),
        ("Wall time", summary.duration(s.wall_s) + (" so far" if s.running else "")),
    ]
    return rows


def summary_section(s: Sweep, level: int) -> list:
    out = [Heading("Summary", level)]
    if s.running:
        out.append(Para("This sweep is still running: reported as it stands at load time.", note=True))
    elif s.state == "interrupted":
        out.append(Para("This sweep was interrupted: its driver stopped before the end; trials still marked "
                        "running stopped with it.", note=True))
    if s.other_parents:
        out.append(Para(f"The experiment holds {s.other_parents + 1} sweeps; this report covers the latest.", note=True))
    out.append(Table(pd.DataFrame(summary_rows(s), columns=["", "value"])))
    if s.finished.empty:
        out.append(Para(f"No trial has {'finished yet' if s.running else 'finished'} (none completed or stopped "
                        "early with a metric value).", note=True))
    return out


def best_section(s: Sweep, level: int, best) -> list:
    out = [Heading("Best configurations", level)]
    t = s.trials
    unranked = t[t["status"].isin(FINISHED) & ~t["trial"].isin(s.finished["trial"])]
    if len(unranked):
        out.append(Para(f"{len(unranked)} trial(s) ended without a finite {s.metric} and are not ranked: "
                        f"{', '.join(unranked['trial'])}.", note=True))
    ranked = summary.ranked(s)
    if ranked.empty:
        out.append(Para("No trial ran the full budget: nothing to rank (trials stopped early are not compared "
                        "with each other at unequal budgets).", note=True))
        return out + stopped_blocks(s)
    cols = [c for c in summary.varied_columns(s)]
    n = s.queries(summary.search_split(s))
    near = (within_noise(ranked["final_metric"], float(ranked["final_metric"].iloc[0]), n, s.mode)
            if n else np.zeros(len(ranked), dtype=bool))
    rows = []
    for rank, ((_, t), close) in enumerate(zip(ranked.head(TOP).iterrows(), near), start=1):
        row = {"rank": rank, "trial": t["trial"]}
        row.update({c: value(t[c]) for c in cols})
        row.update({s.metric: num(t["final_metric"]), "within noise of the best": "yes" if close else "no",
                    f"best epoch (its {s.metric})": f"{int(t['best_epoch'])} ({num(t['best_metric'])})"})
        rows.append(row)
    noise = (f"'Within noise': inside the best value's 95% binomial interval over the {n} validation queries."
             if n else "No query count was recorded, so no trial is marked within noise.")
    out.append(Para(f"Top {len(rows)} of the {len(ranked)} trials that ran the full budget, ranked by {s.metric} at "
                    f"their last epoch ({s.mode}); the best epoch is shown for information only (the checkpoint "
                    f"holds the last). {noise} {int(near.sum())} of {len(ranked)} are within noise of the best."))
    out.append(Table(pd.DataFrame(rows)))
    out.append(Para(f"Reproduce the best trial, {best['trial']}, with every parameter its run recorded (the same "
                    "budget, seed and validation split):"))
    out.append(Code(summary.train_command(s, best["trial"])))
    return out + stopped_blocks(s)


def stopped_blocks(s: Sweep) -> list:
    stopped = s.stopped_early
    if stopped.empty:
        return []
    d = s.decisions
    stops = d[d["decision"] == "stop"].drop_duplicates("trial") if len(d) else d  # each trial's first stop
    cutoff = dict(zip(stops["trial"], stops["cutoff"])) if len(stops) else {}
    t = stopped.sort_values(["epochs_run", "final_metric"], ascending=[False, s.mode != "max"])
    rows = pd.DataFrame({"trial": t["trial"].to_numpy(), "stopped at epoch": [str(int(e)) for e in t["epochs_run"]],
                         f"{s.metric} there": [num(v) for v in t["final_metric"]],
                         "cut-off it faced": [num(cutoff[x]) if x in cutoff else "not recorded" for x in t["trial"]]})
    return [Para(f"Stopped early by ASHA ({len(stopped)}), shown apart: their values are at fewer epochs and are "
                 "not ranked with the full-budget trials."), Table(rows)]


def curves_section(s: Sweep, level: int, prefix: str, best_name, ylim=None) -> list:
    out = [Heading("Learning curves", level)]
    if s.curves.empty or s.metric not in s.curves:
        return out + [Para(f"No epoch of {s.metric} has been logged yet.", note=True)]
    asha = s.asha
    rungs = asha_rungs(*asha) if asha else []
    out.append(Image(f"{prefix}curves.png", figures.learning_curves(s, rungs, best_name, ylim), f"{s.metric} per epoch"))
    out.append(Para("Blue: ran the full budget; grey dashed: stopped early by ASHA; red dotted: diverged or failed; "
                    "thick: the best trial."))
    if not asha:
        return out + [Para("The sweep used no ASHA scheduler: no rungs.", note=True)]
    grace, rf, max_t = asha
    d = s.decisions
    out.append(Para(f"ASHA's decisions as it made them (grace {grace}, reduction factor {rf}, max {max_t} epochs): "
                    f"at each rung a trial continues when its {s.metric} is not below the cut-off, the (1 − 1/{rf}) "
                    "quantile of the values recorded at that rung so far (the first trials at a rung face none)."))
    if d.empty:
        return out + [Para("No decisions were recorded (a sweep older than this record, or no trial reached a "
                           "rung).", note=True)]
    rows = []
    for rung, g in d.groupby("rung", sort=True):
        cut = g["cutoff"].dropna()
        rows.append({"rung (epoch)": str(rung), "trials judged": str(len(g)),
                     "continued": str(int((g["decision"] == "continue").sum())),
                     "stopped": str(int((g["decision"] == "stop").sum())),
                     "cut-offs faced": (f"{num(cut.min())} – {num(cut.max())}" if len(cut) else "none"),
                     "with no cut-off yet": str(int(g["cutoff"].isna().sum()))})
    return out + [Table(pd.DataFrame(rows))]


def search_section(s: Sweep, level: int, prefix: str, imp) -> list:
    """How the search went: the objective in trial order, and the swept values of the full-budget trials."""
    out = [Heading("Search", level)]
    startup = s.params.get("optuna.n_startup_trials")
    png = figures.optimisation_history(s, int(startup) if startup and s.params.get("search") == "optuna" else None)
    if png is None:
        return out + [Para("No trial has finished: no history yet.", note=True)]
    out.append(Image(f"{prefix}history.png", png, "optimisation history"))
    fields = [f for f in s.swept if f != "seed"]
    png = figures.parallel_coordinates(s, fields)
    if png is not None:
        out.append(Image(f"{prefix}parallel.png", png, "parallel coordinates"))
    numeric = [f for f in fields if f in s.full_budget and s.full_budget[f].nunique(dropna=True) > 1]
    pair = [f for f in (imp or {}) if f in numeric][:2] if imp is not None else []
    pair = pair if len(pair) == 2 else numeric[:2]
    why = "the two most important parameters" if imp is not None and len(pair) == 2 and list(imp)[:2] == pair \
        else "the first two swept parameters (too few full-budget trials to rank them)"
    if len(pair) == 2:
        png = figures.interaction(s, pair[0], pair[1])
        if png is not None:
            out.append(Image(f"{prefix}interaction.png", png, f"{pair[0]} and {pair[1]}"))
            out.append(Para(f"{pair[0]} against {pair[1]}, {why}; each full-budget trial coloured by its "
                            f"{s.metric}, with a contour interpolated between them where there are enough."))
    return out


def sensitivity_section(s: Sweep, level: int, prefix: str, imp, imp_note: str) -> list:
    out = [Heading("Sensitivity", level)]
    fields = [f for f in s.swept if f in s.trials]
    png = figures.sensitivity(s, fields)
    if png is None:
        out.append(Para("No trial ran the full budget, or nothing was swept: nothing to plot.", note=True))
    else:
        out.append(Image(f"{prefix}sensitivity.png", png, f"{s.metric} against each swept parameter"))
        out.append(Para(f"{s.metric} at the last epoch of each trial that ran the full budget, against each swept "
                        "value" + ("; colour: policy." if figures.policy_colours(s) else ".")))
    return out + importance_blocks(imp, imp_note, prefix)


def compared_fields(s: Sweep) -> list[str]:
    """The grid fields (and the policy, when it varies) the report compares across seeds."""
    fields = [f for f in s.grid_fields if f != "seed"]
    if "policy" not in fields and len(summary.policies(s)) > 1:
        fields.append("policy")
    return fields


def comparison_of(s: Sweep, field: str, value: str = "final_metric"):
    config_columns = [c for c in s.param_names if c in s.full_budget and c not in RUNTIME_FIELDS]
    return compare_arms(s.full_budget, field, value=value, mode=s.mode, pair="seed", config_columns=config_columns)


def is_comparison_sweep(s: Sweep) -> bool:
    """A sweep that samples nothing and compares grid arms on shared seeds, with no final stage done:
    its result is that comparison."""
    return s.finals_done.empty and len(s.full_budget) > 0 and bool(compared_fields(s)) and set(s.swept) <= set(s.grid_fields)


def comparison_texts(c) -> tuple[str, str]:
    """(each arm's mean and interval, the differences from the best arm paired by seed) of a Comparison."""
    arms = "; ".join(f"{a}: {text} (n = {n})" for a, text, n in zip(c.arms["arm"], c.arms["interval"], c.arms["n"]))
    diffs = "; ".join(
        f"{a} − {b} = {text} over {n} common seeds, "
        + ("too few seeds to test" if sig is None else
           f"{'significant' if sig else 'not significant'} (Holm p {p_relation(ph)})")
        for a, b, text, n, sig, ph in zip(c.vs_best["a"], c.vs_best["b"], c.vs_best["interval"], c.vs_best["n"],
                                          c.vs_best["significant"], c.vs_best["p_holm"]))
    return arms, diffs


def _compared(c) -> bool:
    return c.comparable and c.best is not None and len(c.vs_best) > 0


def has_fixed_target_arm(field: str, comparison) -> bool:
    return field == "tau_base" and FIXED_TARGET_TAU in set(pd.to_numeric(comparison.arms.get("arm", []), errors="coerce"))


def comparison_headline(s: Sweep) -> list:
    """The result of a sweep that samples nothing and compares grid arms on the same seeds: the
    comparison itself (a best trial of such a sweep answers no question)."""
    out, best_values, best_probes = [], None, None
    for field in compared_fields(s):
        c = comparison_of(s, field)
        arms, diffs = comparison_texts(c)
        lead = (f"This sweep samples nothing: it compares {field} at one configuration on the same seeds, so its "
                f"result is that comparison, on the {summary.eval_split(s)}. Mean {s.metric} [95% t CI]: {arms or 'no arm'}.")
        if not _compared(c):
            out.append(Para(f"{lead} The arms are not compared (see Comparisons).", note=True))
            continue
        out.append(Para(f"{lead} Paired by seed, simultaneous 95% intervals: {diffs}."
                        + (f" {FIXED_TARGET_NOTE}" if has_fixed_target_arm(field, c) else "")))
        probe = comparison_of(s, field, "linear_probe_acc")
        if _compared(probe):
            probe_arms, probe_diffs = comparison_texts(probe)
            out.append(Para(f"The same comparison on the linear probe (a second view of the same runs, tested apart "
                            f"from {s.metric}): {probe_arms}. Paired by seed: {probe_diffs}."))
        if best_values is None:
            arm = s.full_budget[s.full_budget[field] == c.best]
            best_values = [float(v) for v in arm["final_metric"]]
            best_probes = [float(v) for v in arm["linear_probe_acc"]]
    if best_values:
        out += baseline_blocks(s, summary.search_split(s), best_values, best_probes)
    return out


def comparisons_section(s: Sweep, level: int, prefix: str) -> list:
    """Each grid field (and the policy, when it varies) compared across full-budget trials."""
    fields = compared_fields(s)
    if not fields:
        return []
    out = [Heading("Comparisons", level)]
    for field in fields:
        out.append(Heading(field, level + 1))
        comparison = comparison_of(s, field)
        out += comparison_blocks_of(comparison, s.metric, comparison.notes)
        if has_fixed_target_arm(field, comparison):
            out.append(Para(FIXED_TARGET_NOTE))
        if comparison.comparable and len(comparison.arms):
            out.append(Image(f"{prefix}{slug(field)}_arms.png",
                             figures.arm_means(comparison.arms, s.full_budget, field, s.metric), f"{field} means"))
    return out


def comparison_blocks_of(c, metric: str, notes: list[str]) -> list:
    """A Comparison as tables: each arm's mean and interval, then best − each other arm."""
    out = []
    if len(c.arms):
        out.append(Table(pd.DataFrame({
            "rank": c.arms["rank"].astype(str), c.field: c.arms["arm"].astype(str), "n": c.arms["n"].astype(str),
            f"mean {metric} [95% t CI]": c.arms["interval"]})))
    if c.comparable and len(c.vs_best):
        out.append(Table(pd.DataFrame({
            "best − this": [f"{a} − {b}" for a, b in zip(c.vs_best["a"], c.vs_best["b"])],
            "common seeds": c.vs_best["n"].astype(str),
            "difference [simultaneous CI]": c.vs_best["interval"],
            "p (Holm)": [p_value(v) for v in c.vs_best["p_holm"]],
            "significant": ["–" if v is None else ("yes" if v else "no") for v in c.vs_best["significant"]],
        })))
    return out + [Para(" ".join(notes), note=not c.comparable)]


def health_section(s: Sweep, level: int, prefix: str) -> list:
    out = [Heading("Health", level)]
    t = s.trials
    diverged = t[t["status"] == "diverged"]
    alive = t[~t["status"].isin(["diverged", "failed"])]
    has_spread = alive["final_z_spread"].notna().any() or alive["final_eff_rank"].notna().any()
    if has_spread:
        flags = [collapsed(z, r) for z, r in zip(alive["final_z_spread"], alive["final_eff_rank"])]
        rule = (f"a trial that did not diverge but ended with z_spread below {COLLAPSE_SPREAD:g} (z_spread: the "
                "std of the L2-normalised projections times sqrt(dim): 1 when spread, 0 when every image maps to one "
                f"point) or an effective rank below {COLLAPSE_RANK:g} (RankMe: about 1 when the projections lie on "
                "a line or two antipodal points)")
    else:  # a sweep older than z_spread and eff_rank
        flags = list(alive["final_z_std"] < COLLAPSE_Z_STD)
        rule = f"a trial that did not diverge but ended with z_std below {COLLAPSE_Z_STD:g}"
    collapsed_trials = alive[np.asarray(flags, dtype=bool)]
    failed = t[t["status"] == "failed"]
    out.append(Para(f"Collapsed: {rule}."))
    if diverged.empty and collapsed_trials.empty and failed.empty:
        out.append(Para("No trial diverged, collapsed or failed."))
    for label, rows in (("Diverged", diverged), ("Collapsed", collapsed_trials), ("Failed", failed)):
        if rows.empty:
            continue
        out.append(Para(f"{label}: {len(rows)} trial{'s' if len(rows) != 1 else ''}."))
        out.append(Table(pd.DataFrame({
            "trial": rows["trial"], "status": rows["status"], "epochs run": rows["epochs_run"].astype(str),
            "final loss": [num(v) for v in rows["final_loss"]], "final z_std": [num(v) for v in rows["final_z_std"]],
            "final z_spread": [num(v, 3) for v in rows["final_z_spread"]],
            "final eff_rank": [num(v, 1) for v in rows["final_eff_rank"]],
            "error": [e or "–" for e in rows["error"]],
        })))
    png = figures.spread_curves(s) if has_spread else figures.z_std_curves(s, COLLAPSE_Z_STD)
    if png is not None and not s.curves.empty:
        name = "z_spread.png" if has_spread else "z_std.png"
        out.append(Image(f"{prefix}{name}", png, "collapse health per epoch"))
    return out


def comparison_blocks(sweeps: list[Sweep]) -> list:
    out = [Heading("Comparison", 2)]
    metrics = {f"{s.metric} ({s.mode})" for s in sweeps}
    if len(metrics) > 1:
        out.append(Para(f"The sweeps use different metrics ({', '.join(sorted(metrics))}): compare with care.", note=True))
    rows = {s.experiment: dict(summary_rows(s)) for s in sweeps}
    labels = list(dict.fromkeys(label for r in rows.values() for label in r))  # an odd status adds a row
    table = pd.DataFrame({"": labels})
    for exp, r in rows.items():
        table[exp] = [r.get(label, "0") for label in labels]
    out.append(Table(table))
    out.append(Heading("Best of each", 3))
    best_rows = []
    for s in sweeps:
        b = summary.best_trial(s)
        if b is None:
            best_rows.append({"experiment": s.experiment, "trial": "none finished", "best": "–", "values": "–"})
            continue
        vals = ", ".join(f"{c}={value(b[c])}" for c in summary.varied_columns(s))
        best_rows.append({"experiment": s.experiment, "trial": b["trial"],
                          "best": f"{num(b['final_metric'])} {s.metric}", "values": vals or "–"})
    out.append(Table(pd.DataFrame(best_rows)))
    png = figures.overlaid_curves(sweeps)
    if png is not None:
        out.append(Image("comparison_curves.png", png, "learning curves of the sweeps, overlaid"))
        out.append(Para("Each sweep's trials on shared axes: solid, the trials that ran the full budget; faint, those "
                        "stopped early. The per-sweep figures below share the same y-axis."))
    out.append(Heading("Policies side by side", 3))
    tables = {s.experiment: compare_arms(s.full_budget, "policy", mode=s.mode).arms for s in sweeps}
    names = sorted({str(p) for t in tables.values() for p in t["arm"]})
    if not names:
        return out + [Para("No full-budget trial in any sweep: no policy to compare.", note=True)]
    aligned = pd.DataFrame({"policy": names})
    for exp, t in tables.items():
        by = {str(r["arm"]): f"{r['rank']}. {r['interval']} (n = {r['n']})" for _, r in t.iterrows()}
        aligned[exp] = [by.get(p, "–") for p in names]
    out.append(Para("Rank. mean metric at the last epoch [95% Student-t interval] (n full-budget trials) of each "
                    "policy in each sweep: a description of each sweep, not a test across sweeps."))
    return out + [Table(aligned)]


def importance_blocks(imp, note: str, prefix: str) -> list:
    if imp is None:
        return [Para(note, note=True)]
    t = imp.table
    return [Para(note), Table(pd.DataFrame({
        "parameter": t["parameter"], "importance": [num(v, 3) for v in t["importance"]],
        f"bootstrap {imp.level:.0%} interval": [f"[{num(lo, 3)}, {num(hi, 3)}]" for lo, hi in zip(t["low"], t["high"])]})),
        Image(f"{prefix}importances.png", figures.importances(dict(imp)), "parameter importances")]
