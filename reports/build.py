"""build_report: load the sweeps, write the CSVs, the Markdown (+ PNGs) and the HTML."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from reports import render, sections
from reports.errors import ReportError
from reports.load import load_sweep
from reports.store import open_store


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
    title = sections.title(sweeps)
    blocks = sections.document(sweeps)
    render.write_markdown(out / "report.md", title, blocks)
    path = out / "report.html"
    path.write_text(render.to_html(title, blocks), encoding="utf-8")
    if echo is not None and len(sweeps) == 1:
        for line in sections.result_lines(sweeps[0]):
            echo(line)
    return path
