"""Tiny guards on the project's contracts: the record schema, the README's table, public names."""

from __future__ import annotations

import importlib
import re
from dataclasses import fields
from pathlib import Path

import pytest

from harness.records import CALL_SCHEMA, CallRecord, record_columns
from tests.test_workflow import HARNESS_COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def test_record_fields_are_the_schema_columns_in_order():
    assert record_columns() == list(CALL_SCHEMA)
    assert [f.name for f in fields(CallRecord)][-1] == "extra"


def test_readme_table_names_every_column_in_order():
    text = (ROOT / "README.md").read_text()
    section = text.split("### `calls.parquet`", 1)[1].split("\n## ", 1)[0]
    columns = re.findall(r"^\| `([a-z_0-9]+)` \|", section, flags=re.MULTILINE)
    assert columns == list(CALL_SCHEMA)


@pytest.mark.parametrize(
    "module",
    ["errors", "records", "config", "dataset", "plan", "limiter", "pricing", "client", "runner", "store",
     "events", "report", "bench", "quality", "progress", "simlauncher"],
)  # fmt: skip
def test_public_names_exist(module):
    mod = importlib.import_module(f"harness.{module}")
    assert mod.__doc__ and len(mod.__doc__.strip()) > 40, "each module's docstring names its job"
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"harness.{module}.__all__ names missing {name}"


def test_cli_introspection_sees_the_commands():
    assert {"run", "report", "compare", "validate", "simulate", "events"} <= set(HARNESS_COMMANDS)
    assert {"--dataset", "--models", "--resume", "--max-cost", "--rate", "--arrival"} <= HARNESS_COMMANDS[
        "run"
    ]


def test_client_is_the_only_importer_of_anthropic():
    offenders = []
    for path in (ROOT / "harness").rglob("*.py"):
        if path.name == "client.py" or "simulator" in path.parts:
            continue
        if re.search(r"^\s*(import anthropic|from anthropic)", path.read_text(), flags=re.MULTILINE):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_runner_does_not_import_store_events_or_polars():
    text = (ROOT / "harness" / "runner.py").read_text()
    assert not re.search(r"^(from|import) (harness\.(store|events)|polars)", text, flags=re.MULTILINE)
