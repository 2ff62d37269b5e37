"""Model-selection reports: `calls.parquet` → summary, comparison, recommendation, report.md/html;
and `compare_runs` for nightly regressions. Pure over files: never calls the API.

The names below are imported on first use (PEP 562): the report's builders pull in scipy and
matplotlib, which a run without a report (its end-of-run health lines read
`harness.report.health` only) should not pay for in start-up CPU.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.report.build import ReportResult, write_report
    from harness.report.insights import posthog_insights_from_calls, posthog_insights_from_events
    from harness.report.recommend import Constraints
    from harness.report.regress import CompareResult, Thresholds, compare_runs

_HOME = {
    "CompareResult": "harness.report.regress",
    "Constraints": "harness.report.recommend",
    "ReportResult": "harness.report.build",
    "Thresholds": "harness.report.regress",
    "compare_runs": "harness.report.regress",
    "posthog_insights_from_calls": "harness.report.insights",
    "posthog_insights_from_events": "harness.report.insights",
    "write_report": "harness.report.build",
}

__all__ = [
    "CompareResult",
    "Constraints",
    "ReportResult",
    "Thresholds",
    "compare_runs",
    "posthog_insights_from_calls",
    "posthog_insights_from_events",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'harness.report' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
