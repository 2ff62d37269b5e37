"""history.html renders in headless Chromium: its trend charts are drawn, the page is not blank."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from harness.report.history import write_history
from tests.synthetic import ModelSpec, synthetic_calls, write_run

INSTALL = "sudo apt-get install -y chromium  (Debian/Ubuntu; `make test` does it when run as root)"


def _chromium() -> str:
    """The browser; without it a skip that says how to install it, under CI a failure."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"chromium is not installed and CI must not skip this test: {INSTALL}")
    pytest.skip(f"chromium is not installed: {INSTALL}")


def test_history_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    results = tmp_path / "results"
    for night in range(9):
        slow = 1.8 if night == 8 else 1.0
        models = [ModelSpec("a", median_s=0.6 * slow), ModelSpec("b", median_s=1.1)]
        start = datetime(2026, 11, 1, 3, 17, tzinfo=UTC) + timedelta(days=night)
        write_run(
            results / f"n{night}",
            synthetic_calls(models, cases=60, seed=night, run_id=f"n{night}", start=start),
        )
    result = write_history([results], tmp_path / "history")
    html = result.history_html.read_text()
    assert html.count("data:image/png;base64,") >= 8 and "DRIFT (worse)" in html
    shot = tmp_path / "shot.png"
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1200,2400", result.history_html.as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert shot.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1000
    flat = (pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(flat, axis=0)) > 50, "screenshot looks blank"
    non_white = np.mean(np.any(flat < 245, axis=1))
    assert non_white > 0.02, f"screenshot is mostly white ({non_white:.1%} non-white pixels)"
