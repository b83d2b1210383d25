"""Results reports from a sweep's MLflow runs: MLflow -> pandas -> figures -> HTML/Markdown/CSV.

Importing this package is cheap; MLflow, pandas and matplotlib load on the first build_report call.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from reports.errors import ReportError

__all__ = ["build_report", "ReportError"]


def build_report(experiments: list[str], tracking_uri: str | None, out_dir: str | Path,
                 echo: Callable[[str], None] | None = None) -> Path:
    """Write report.html, report.md (+ PNGs), trials.csv and curves.csv into out_dir.

    One experiment gives a report of that sweep; several give each sweep plus a comparison.
    With echo, a single sweep's final-stage result also goes to it in a few lines (the console).
    Returns the path of report.html; raises ReportError for a user mistake.
    """
    from reports.build import build_report as build  # here: `import reports` stays cheap (no pandas, matplotlib)

    return build(experiments, tracking_uri, out_dir, echo)
