"""Model-selection reports: `calls.parquet` → summary, comparison, recommendation, report.md/html;
and `compare_runs` for nightly regressions. Pure over files: never calls the API.
"""

from harness.report.build import ReportResult, write_report
from harness.report.insights import posthog_insights_from_calls, posthog_insights_from_events
from harness.report.recommend import Constraints
from harness.report.regress import CompareResult, Thresholds, compare_runs

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
