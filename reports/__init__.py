"""Results reports from a sweep's MLflow runs: MLflow -> pandas -> figures -> HTML/Markdown/CSV.

Importing this package is cheap; MLflow, pandas and matplotlib load on the first build_report call.
"""
from __future__ import annotations

from pathlib import Path

from reports.errors import ReportError

__all__ = ["build_report", "ReportError"]


def build_report(experiments: list[str], tracking_uri: str | None, out_dir: str | Path) -> Path:
    """Write report.html, report.md (+ PNGs), trials.csv and curves.csv into out_dir.

    One experiment gives a report of that sweep; several give each sweep plus a comparison.
    Returns the path of report.html; raises ReportError for a user mistake.
    """
    from reports.build import build_report as build

    return build(experiments, tracking_uri, out_dir)
