"""Report generation at scale: 1,000,000 synthetic call rows (4 models) → write_report.

Targets (issue #4): under 10 s and under 2 GiB peak RSS. Run: `python -m benchmarks.report_scale`
(also called by `make perf`). The data is generated and written before timing starts.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 10.0
TARGET_RSS_GIB = 2.0


class _PeakRss:
    """Samples this process's RSS every 20 ms while the report runs."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def run(print_fn: Callable[..., Any] = print, *, rows: int = 1_000_000) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    from synthetic import ModelSpec, synthetic_calls, write_run

    from harness.report import write_report

    models = [
        ModelSpec("model-a", median_s=0.6, usd_per_output_token=4e-6, error_rate=0.01),
        ModelSpec("model-b", median_s=0.9, usd_per_output_token=15e-6, error_rate=0.02),
        ModelSpec("model-c", median_s=1.4, usd_per_output_token=75e-6, error_rate=0.005),
        ModelSpec("model-d", median_s=0.7, sigma=0.6, usd_per_output_token=1e-6, error_rate=0.05),
    ]
    cases = rows // (len(models) * 5)
    with tempfile.TemporaryDirectory(prefix="report-scale-") as tmp:
        frame = synthetic_calls(models, cases=cases, repeats=5, seed=1, users=1000)
        run_dir = write_run(Path(tmp) / "run", frame)
        n = frame.height
        del frame
        base_rss = psutil.Process().memory_info().rss
        with _PeakRss() as rss:
            t0 = time.perf_counter()
            result = write_report(run_dir)
            elapsed = time.perf_counter() - t0
    peak_gib = rss.peak / 2**30
    figures = {
        "rows": n,
        "report_s": round(elapsed, 2),
        "peak_rss_gib": round(peak_gib, 3),
        "rss_before_gib": round(base_rss / 2**30, 3),
        "target_s": TARGET_S,
        "target_rss_gib": TARGET_RSS_GIB,
        "within_targets": elapsed < TARGET_S and peak_gib < TARGET_RSS_GIB,
        "recommended": result.recommended_model,
    }
    print_fn(
        f"report over {n:,} rows: {elapsed:.2f} s (target < {TARGET_S:g} s), "
        f"peak RSS {peak_gib:.2f} GiB (target < {TARGET_RSS_GIB:g} GiB; process held {base_rss / 2**30:.2f} GiB before) "
        f"→ {'OK' if figures['within_targets'] else 'OVER TARGET'}"
    )
    return figures


if __name__ == "__main__":
    out = run()
    sys.exit(0 if out["within_targets"] else 1)
