"""build_report: load the sweeps, assemble the report from its sections in order, write the CSVs, the
Markdown (+ PNGs) and the HTML. A new section is a module of its own, called from sweep_blocks."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from reports import render, summary
from reports.ablation import ablation_section
from reports.across_sweeps import across_sweeps_section, shared_limits
from reports.comparisons import comparisons_section
from reports.curves import curves_section
from reports.errors import ReportError
from reports.health import health_section
from reports.importance import param_importances
from reports.load import Sweep, load_sweep
from reports.overview import best_section, summary_section
from reports.pbt import pbt_section
from reports.render import Heading, slug
from reports.result import result_lines, result_section
from reports.search import search_section
from reports.sensitivity import sensitivity_section
from reports.store import open_store
from reports.views import policies_section


def build_report(experiments: list[str], tracking_uri: str | None, out_dir: str | Path,
                 echo: Callable[[str], None] | None = None) -> Path:
    experiments = list(experiments or [])
    if not experiments:
        raise ReportError("Name at least one experiment to report on (--experiment NAME).")
    twice = sorted({e for e in experiments if experiments.count(e) > 1})
    if twice:
        raise ReportError(f"Experiment {twice[0]!r} is named twice; name each experiment once.")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"Output folder {out} is a file; give a folder (--out DIR).")
    store = open_store(tracking_uri)
    try:
        sweeps = [load_sweep(store, e) for e in experiments]
    except store.READ_ERRORS as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReportError(f"Cannot read the MLflow store at {tracking_uri}: {first}") from e

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"Cannot create the output folder {out}: {err.strerror}; give a writable folder (--out DIR).") from None
    pd.concat([s.trials for s in sweeps], ignore_index=True).to_csv(out / "trials.csv", index=False)
    pd.concat([s.curves for s in sweeps], ignore_index=True).to_csv(out / "curves.csv", index=False)
    heading = title(sweeps)
    blocks = document(sweeps)
    render.write_markdown(out / "report.md", heading, blocks)
    path = out / "report.html"
    path.write_text(render.to_html(heading, blocks), encoding="utf-8")
    if echo is not None and len(sweeps) == 1:
        for line in result_lines(sweeps[0]):
            echo(line)
    return path


def title(sweeps: list[Sweep]) -> str:
    running = " (still running)" if any(s.running for s in sweeps) else ""
    if len(sweeps) == 1:
        return f"Sweep report: {sweeps[0].name}{running}"
    return "Sweep comparison: " + " vs ".join(s.experiment for s in sweeps) + running


def document(sweeps: list[Sweep]) -> list:
    if len(sweeps) == 1:
        return sweep_blocks(sweeps[0], prefix="", level=2)
    ylim = shared_limits(sweeps)
    out = across_sweeps_section(sweeps)
    for s in sweeps:  # one after the other at full width: nothing squeezed into a column
        out += [Heading(s.experiment, 2)] + sweep_blocks(s, prefix=slug(s.experiment) + "_", level=3, ylim=ylim)
    return out


def sweep_blocks(s: Sweep, prefix: str, level: int, ylim: tuple[float, float] | None = None) -> list:
    best = summary.best_trial(s)
    best_name = None if best is None else best["trial"]
    imp, imp_note = param_importances(s)
    return (ablation_section(s, level) + result_section(s, level) + summary_section(s, level) + best_section(s, level, best)
            + curves_section(s, level, prefix, best_name, ylim)
            + (pbt_section(s, level, prefix) if s.scheduler == "pbt" else [])
            + search_section(s, level, prefix, imp) + sensitivity_section(s, level, prefix, imp, imp_note)
            + comparisons_section(s, level, prefix) + policies_section(s, level, prefix)
            + health_section(s, level, prefix))
