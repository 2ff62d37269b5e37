"""Tiny guards on the project's contracts: the record schema, the README's table, public names."""

from __future__ import annotations

import importlib
import re
from dataclasses import fields
from pathlib import Path

import pytest

from harness.records import CALL_SCHEMA, CallRecord, record_columns
from tests.helpers import cli_commands

ROOT = Path(__file__).resolve().parents[1]


def test_record_fields_are_the_schema_columns_in_order():
    assert record_columns() == list(CALL_SCHEMA)
    assert "extra" not in {f.name for f in fields(CallRecord)}, "the record is the row: no side channel"


def test_readme_table_names_every_column_in_order():
    text = (ROOT / "README.md").read_text()
    section = text.split("### `calls.parquet`", 1)[1].split("\n## ", 1)[0]
    columns = re.findall(r"^\| `([a-z_0-9]+)` \|", section, flags=re.MULTILINE)
    assert columns == list(CALL_SCHEMA)


@pytest.mark.parametrize(
    "module",
    ["errors", "records", "config", "dataset", "plan", "limiter", "pricing", "client", "runner", "store",
     "events", "events.event", "events.journal", "events.sink", "events.pipe", "events.child", "events.resend",
     "report", "bench", "quality", "progress", "simlauncher", "secrets", "procs", "target", "rundir"],
)  # fmt: skip
def test_public_names_exist(module):
    mod = importlib.import_module(f"harness.{module}")
    assert mod.__doc__ and len(mod.__doc__.strip()) > 40, "each module's docstring names its job"
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"harness.{module}.__all__ names missing {name}"


def test_cli_introspection_sees_the_commands():
    assert {"run", "report", "compare", "validate", "simulate", "events"} <= set(cli_commands())
    assert {"--dataset", "--models", "--resume", "--max-cost", "--rate", "--arrival"} <= cli_commands()["run"]


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


def _harness_sources() -> dict[str, str]:
    """Source text of every harness module outside the simulator island, by path."""
    return {
        str(p.relative_to(ROOT)): p.read_text()
        for p in (ROOT / "harness").rglob("*.py")
        if "simulator" not in p.parts
    }


def test_only_the_secrets_module_names_the_key_variables():
    named = sorted(
        path
        for path, text in _harness_sources().items()
        if re.search(r"ANTHROPIC_API_KEY|POSTHOG_API_KEY|POSTHOG_PERSONAL_API_KEY", text)
    )
    assert named == ["harness/secrets.py"]


def test_no_child_is_started_with_a_preexec_fn():
    offenders = [path for path, text in _harness_sources().items() if "preexec_fn=" in text]
    assert offenders == []


def test_the_import_graph_has_no_cycle():
    """Edges between harness modules (imports inside functions too); a cycle would make the layers lie."""
    import ast

    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in (ROOT / "harness").rglob("*.py")}  # fmt: skip

    def top(m: str) -> str:
        return ".".join(m.split(".")[:2])

    edges: dict[str, set[str]] = {}
    for m, p in mods.items():
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("harness"):
                targets = [n.module or ""] + [f"{n.module}.{a.name}" for a in n.names]
            elif isinstance(n, ast.Import):
                targets = [a.name for a in n.names if a.name.startswith("harness")]
            else:
                continue
            edges.setdefault(top(m), set()).update(top(t) for t in targets if t in mods and top(t) != top(m))

    def reach(a: str, seen: set[str]) -> set[str]:
        for b in edges.get(a, ()):
            if b not in seen:
                seen.add(b)
                reach(b, seen)
        return seen

    assert [a for a in edges if a in reach(a, set())] == []
