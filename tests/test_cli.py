"""The CLI as a user meets it: bad datasets and bad configuration are refused clearly, with exit 2 and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app

BAD = Path(__file__).parent / "data" / "bad"
EXPECTED = json.loads((BAD / "EXPECTED.json").read_text())["files"]
SMOKE = Path(__file__).parent.parent / "datasets" / "smoke.jsonl"
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args), env={"ANTHROPIC_API_KEY": "", "COLUMNS": "200"})
    return result, result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_dataset_refused_before_any_call(name, tmp_path):
    expected = EXPECTED[name]
    results = tmp_path / "results"
    result, output = invoke(
        "run", "--dataset", str(BAD / name), "--models", "claude-haiku-4-5", "--results-dir", str(results)
    )
    assert result.exit_code == 2, output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), output
    assert "Traceback" not in output
    where = f"{name}:{expected['line']}" if expected["line"] is not None else name
    assert where in output, output
    assert f": {expected['field']}:" in output, output
    assert not results.exists(), "a refused run must not create a results directory"


@pytest.mark.parametrize("name", sorted(EXPECTED)[:10])
def test_validate_names_file_line_field(name):
    expected = EXPECTED[name]
    result, output = invoke("validate", str(BAD / name))
    assert result.exit_code == 2
    assert expected["field"] in output
    assert "Traceback" not in output


def test_validate_ok_dataset():
    result, output = invoke("validate", str(SMOKE))
    assert result.exit_code == 0, output
    assert "ok" in output


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--concurrency", "-1"], "--concurrency"),
        (["--concurrency", "0"], "--concurrency"),
        (["--rate", "0"], "--rate"),
        (["--repeats", "0"], "--repeats"),
        (["--arrival", "bursty", "--rate", "5"], "--arrival"),
        (["--max-cost", "0"], "--max-cost"),
        (["--target", "moon"], "--target"),
        (["--models", "claude-haiku-4-5,claude-haiku-4-5"], "--models"),
    ],
)
def test_bad_options_name_the_option(args, option, tmp_path):
    base = ["run", "--dataset", str(SMOKE), "--results-dir", str(tmp_path / "r")]
    if "--models" not in args:
        base += ["--models", "claude-haiku-4-5"]
    result, output = invoke(*base, *args)
    assert result.exit_code == 2, output
    assert option in output
    assert not (tmp_path / "r").exists()


def test_malformed_profile_is_refused(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text("[run\nmodels = 3\n")
    result, output = invoke(
        "run", "--profile", str(profile), "--dataset", str(SMOKE), "--models", "claude-haiku-4-5"
    )
    assert result.exit_code == 2
    assert "--profile" in output and "malformed TOML" in output


def test_profile_unknown_key_is_refused(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text("[run]\nconcurrensy = 3\n")
    result, output = invoke(
        "run", "--profile", str(profile), "--dataset", str(SMOKE), "--models", "claude-haiku-4-5"
    )
    assert result.exit_code == 2
    assert "run.concurrensy" in output


def test_model_without_price_is_refused(tmp_path):
    result, output = invoke(
        "run", "--dataset", str(SMOKE), "--models", "claude-unknown-9", "--results-dir", str(tmp_path / "r")
    )
    assert result.exit_code == 2
    assert "prices" in output and "claude-unknown-9" in output
    assert not (tmp_path / "r").exists()


def test_price_override_missing_output_is_refused(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text('[prices."claude-custom-1"]\ninput = 0.000001\n')
    result, output = invoke(
        "run",
        "--profile",
        str(profile),
        "--dataset",
        str(SMOKE),
        "--models",
        "claude-custom-1",
        "--results-dir",
        str(tmp_path / "r"),
    )
    assert result.exit_code == 2
    assert "prices.claude-custom-1.output" in output


def test_every_command_has_help():
    for command in (
        [],
        ["run"],
        ["report"],
        ["compare"],
        ["validate"],
        ["simulate"],
        ["events"],
        ["events", "resend"],
    ):
        result, output = invoke(*command, "--help")
        assert result.exit_code == 0, (command, output)
        assert "Usage" in output


def test_python_dash_m_harness_works():
    out = subprocess.run(
        [sys.executable, "-m", "harness", "validate", str(BAD / "bad_json.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 2
    assert "bad_json.jsonl:2: (json):" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr
