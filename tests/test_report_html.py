"""report.html renders in headless Chromium and the screenshot is not blank."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from harness.report import write_report
from tests.synthetic import ModelSpec, synthetic_calls, write_run

INSTALL = "sudo apt-get install -y chromium  (Debian/Ubuntu; `make test` does it when run as root)"


def _chromium() -> str:
    """The browser; a newcomer without it gets a skip that says how to install it, CI a failure."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"chromium is not installed and CI must not skip this test: {INSTALL}")
    pytest.skip(f"chromium is not installed: {INSTALL}")


def test_report_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    run = write_run(
        tmp_path / "run", synthetic_calls([ModelSpec("a", median_s=0.6), ModelSpec("b")], cases=120, seed=4)
    )
    html = write_report(run).report_html
    shot = tmp_path / "shot.png"
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1200,2000", html.as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert shot.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    flat = (pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = np.unique(flat, axis=0)
    assert len(colours) > 50, f"screenshot looks blank: {len(colours)} distinct colours"
    non_white = np.mean(np.any(flat < 245, axis=1))
    assert non_white > 0.02, f"screenshot is mostly white ({non_white:.1%} non-white pixels)"
