"""The dataset loader: formats agree, rows normalise, shipped datasets are valid, nothing crashes it.

Hypothesis drives two properties: random JSON values in every field only ever
produce `DatasetError`s (never another exception), and valid cases written as
JSONL, CSV or parquet load back equal.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.util
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.dataset import FIELDS, MAX_TOKENS_LIMIT, LoadResult, load_cases, validate
from harness.errors import DatasetError, DatasetInvalid
from harness.features import FEATURE_FIELDS
from harness.records import Case

ROOT = Path(__file__).resolve().parent.parent
GOOD = Path(__file__).parent / "data" / "good"
DATASETS = ROOT / "datasets"


def _unlined(result: LoadResult) -> list[Case]:
    return [dataclasses.replace(case, line=None) for case in result.cases]


# ---------------------------------------------------------------- fixtures in every format


def test_the_three_formats_of_one_dataset_load_equal() -> None:
    results = {fmt: load_cases(GOOD / f"small.{fmt}") for fmt in ("jsonl", "csv", "parquet")}
    assert {fmt: r.format for fmt, r in results.items()} == {
        "jsonl": "jsonl",
        "csv": "csv",
        "parquet": "parquet",
    }
    assert _unlined(results["jsonl"]) == _unlined(results["csv"]) == _unlined(results["parquet"])
    assert len(results["jsonl"].cases) == 4
    # JSONL: physical lines; CSV: the line each record starts on (record 3 spans two lines); parquet: row numbers.
    assert [c.line for c in results["jsonl"].cases] == [1, 2, 3, 4]
    assert [c.line for c in results["csv"].cases] == [2, 3, 4, 6]
    assert [c.line for c in results["parquet"].cases] == [1, 2, 3, 4]
    for fmt, result in results.items():
        path = GOOD / f"small.{fmt}"
        assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert result.path == str(path)
        assert result.skipped == []
        assert validate(path) == []


def test_rows_are_normalised() -> None:
    cases = {c.id: c for c in load_cases(GOOD / "small.jsonl").cases}
    capital = cases["capital"]
    assert capital.messages == ({"role": "user", "content": "What is the capital of Australia?"},)
    assert capital.tags == ("qa", "geo")
    assert capital.expected == {"contains": "Canberra"}
    chat = cases["2"]  # an integer id becomes a string, as does an integer user_id
    assert chat.user_id == "42"
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "user"]
    assert chat.system == [{"type": "text", "text": "You are a poet."}]
    assert chat.temperature == 0.7
    assert chat.prompt_text().startswith("Now one about snow")
    assert cases["sentiment"].stop_sequences == ("\n\n", "END")
    assert cases["prefill"].messages[-1] == {"role": "assistant", "content": "["}


def test_bom_blank_lines_and_crlf_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": 1, "prompt": "hi"}\r\n\r\n   \n{"id": 2, "prompt": "there"}\r\n')
    result = load_cases(path)
    assert [(c.id, c.line) for c in result.cases] == [("1", 1), ("2", 4)]
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes(b'\xef\xbb\xbfid,prompt,tags\r\n1,hi,"a, b ,,c"\r\n\r\n2,there,\r\n')
    rows = load_cases(csv_path).cases
    assert [(c.id, c.line, c.tags) for c in rows] == [("1", 2, ("a", "b", "c")), ("2", 4, ())]


def test_every_problem_is_reported_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "several.jsonl"
    path.write_text(
        '{"id": "a", "prompt": "", "max_tokens": 0, "colour": "red"}\n'
        '{"id": "a", "messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}\n'
        '{"id": "c", "prompt": "ok", "expected": {"regex": "["}, "temperature": -1}\n',
        encoding="utf-8",
    )
    problems = validate(path)
    assert [(p.line, p.field) for p in problems] == [
        (1, "colour"),
        (1, "prompt"),
        (1, "max_tokens"),
        (2, "messages[1].role"),
        (2, "id"),
        (3, "temperature"),
        (3, "expected.regex"),
    ]
    assert all(
        isinstance(p, DatasetError) and str(p).startswith(f"{path}:{p.line}: {p.field}: ") for p in problems
    )
    assert "colour: unknown field" in str(problems[0])


def test_skip_invalid_keeps_the_good_rows_and_lists_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "partly.jsonl"
    path.write_text(
        '{"id": 1, "prompt": "a"}\n{"id": 2}\nnot json\n{"id": 3, "prompt": "c"}\n', encoding="utf-8"
    )
    with pytest.raises(DatasetInvalid) as raised:
        load_cases(path)
    assert [p.line for p in raised.value.problems] == [2, 3]
    result = load_cases(path, skip_invalid=True)
    assert [c.id for c in result.cases] == ["1", "3"]
    assert [(p.line, p.field) for p in result.skipped] == [(2, "prompt"), (3, "(json)")]
    nothing_valid = tmp_path / "none.jsonl"
    nothing_valid.write_text('{"id": 1}\n', encoding="utf-8")
    with pytest.raises(DatasetInvalid) as raised:
        load_cases(nothing_valid, skip_invalid=True)
    assert raised.value.problems[-1].field == "(file)"


def test_parquet_accepts_native_structs_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "native.parquet"
    pl.DataFrame(
        {
            "id": [1, 2],
            "messages": [
                [{"role": "user", "content": "hi"}],
                [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                ],
            ],
            "expected": [{"contains": "x", "equals": None}, {"contains": None, "equals": "y"}],
            "tags": [["t1", "t2"], None],
            "max_tokens": [10.0, None],
        }
    ).write_parquet(path)
    cases = load_cases(path).cases
    assert [c.id for c in cases] == ["1", "2"]
    assert cases[0].expected == {"contains": "x"} and cases[1].expected == {"equals": "y"}
    assert cases[0].tags == ("t1", "t2") and cases[1].tags == ()
    assert cases[0].max_tokens == 10 and cases[1].max_tokens is None
    assert len(cases[1].messages) == 3


# ---------------------------------------------------------------- shipped datasets


def test_smoke_dataset_is_valid_and_varied() -> None:
    cases = load_cases(DATASETS / "smoke.jsonl").cases
    assert 10 <= len(cases) <= 15
    assert all(c.max_tokens is not None and 64 <= c.max_tokens <= 300 for c in cases)
    assert len({c.user_id for c in cases}) >= 4
    assert any(len(c.messages) >= 3 for c in cases)
    assert (
        any(c.system for c in cases)
        and any(c.stop_sequences for c in cases)
        and any(c.expected for c in cases)
    )
    assert any(isinstance(m["content"], list) for c in cases for m in c.messages)
    assert any("code" in c.tags for c in cases)


def test_mixed_dataset_has_the_promised_shape() -> None:
    path = DATASETS / "mixed.jsonl"
    cases = load_cases(path).cases
    assert 280 <= len(cases) <= 320
    assert path.stat().st_size < 2_000_000
    kinds = Counter(c.tags[0] for c in cases)
    assert set(kinds) == {"short", "summarise", "code", "classify", "chat", "extract"}
    graded = [c for c in cases if c.expected]
    assert len(graded) > len(cases) / 2, "most cases carry an expectation"
    kinds_graded = Counter(next(iter(c.expected or {})) for c in graded)
    assert {"number", "json", "judge", "regex", "equals", "contains"} <= set(kinds_graded)
    assert 5 <= kinds_graded["judge"] <= 20, "a few judge-graded summaries"
    assert any("hard" in c.tags for c in cases) and any("easy" in c.tags for c in cases)
    assert sum(len(c.prompt_text()) > 20_000 for c in cases) >= 5
    code = [c for c in cases if c.tags[0] == "code"]
    assert all(c.max_tokens is not None and 1000 <= c.max_tokens <= 2000 for c in code)
    assert all(c.expected for c in cases if c.tags[0] == "classify")
    assert all(len(c.messages) >= 3 for c in cases if c.tags[0] == "chat")
    users = Counter(c.user_id for c in cases)
    assert 35 <= len(users) <= 45
    heavy = sum(n for _, n in users.most_common(3))
    assert heavy >= 0.2 * len(cases), users.most_common(5)


@pytest.mark.parametrize(
    ("script", "output"),
    [("make_mixed", "mixed.jsonl"), ("make_agent", "agent.jsonl"), ("make_cache", "cache.jsonl")],
)
def test_generators_regenerate_the_committed_files(tmp_path: Path, script: str, output: str) -> None:
    spec = importlib.util.spec_from_file_location(script, DATASETS / f"{script}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / output
    module.write(out)
    assert out.read_bytes() == (DATASETS / output).read_bytes()


def test_agent_dataset_uses_every_request_feature() -> None:
    cases = load_cases(DATASETS / "agent.jsonl").cases
    assert len(cases) == 40
    params = [c.params or {} for c in cases]
    assert sum("tools" in p for p in params) >= 20
    assert {p["thinking"]["type"] for p in params if "thinking" in p} == {"enabled", "adaptive"}
    budgets = {p["thinking"].get("budget_tokens") for p in params if "thinking" in p}
    assert {1024, 2048, 4096} <= budgets
    assert any(t.get("type", "").startswith("web_search") for p in params for t in p.get("tools", ()))
    assert any(p.get("tool_choice", {}).get("type") == "tool" for p in params)
    assert sum(bool(c.expected and "tool_call" in c.expected) for c in cases) == 15


# ---------------------------------------------------------------- hypothesis

_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
_solid = _text.filter(lambda s: bool(s.strip()))
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
_turn = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", 1]), "content": _json | _text}
)
_messy = st.fixed_dictionaries(
    {},
    optional={
        **{name: _json for name in FIELDS},
        "id": _json | _text | st.integers(),
        "messages": st.lists(_turn, max_size=4) | _json,
        "max_tokens": _json | st.integers(-5, MAX_TOKENS_LIMIT + 5),
        "extra": _json,
    },
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_messy, min_size=1, max_size=4))
def test_random_json_in_every_field_never_crashes_the_loader(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    path = tmp_path / "random.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    try:
        result = load_cases(path, skip_invalid=True)
    except DatasetInvalid as exc:
        assert exc.problems and all(isinstance(p, DatasetError) for p in exc.problems)
        return
    bad_lines = {p.line for p in result.skipped}
    assert {c.line for c in result.cases}.isdisjoint(bad_lines)
    assert len(result.cases) + len(bad_lines) == len(rows)
    for case in result.cases:
        raw = rows[case.line - 1]  # type: ignore[operator]
        assert case.id == str(raw["id"]) and set(raw) <= set(FIELDS)
        assert case.messages and case.messages[0]["role"] == "user"
        assert case.max_tokens is None or 1 <= case.max_tokens <= MAX_TOKENS_LIMIT


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.tuples(_text, _text, _text, _text, _text), min_size=1, max_size=4))
def test_random_csv_cells_never_crash_the_loader(tmp_path: Path, cells: list[tuple[str, ...]]) -> None:
    path = tmp_path / "random.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "prompt", "max_tokens", "tags", "messages"])
        writer.writerows(cells)
    try:
        result = load_cases(path)
    except DatasetInvalid as exc:
        assert all(isinstance(p, DatasetError) and p.path == str(path) for p in exc.problems)
    else:
        assert all(isinstance(c, Case) for c in result.cases)


def _content(draw: st.DrawFn, last_assistant: bool) -> str | list[dict[str, str]]:
    text = draw(_solid)
    if last_assistant:
        text = text.rstrip()
    if draw(st.booleans()):
        return text
    return [
        {"type": "text", "text": text},
        *({"type": "text", "text": t} for t in draw(st.lists(_solid, max_size=2))),
    ]


@st.composite
def _cases(draw: st.DrawFn) -> list[Case]:
    count = draw(st.integers(1, 4))
    ids = draw(st.lists(_solid | st.integers(0, 10**6).map(str), min_size=count, max_size=count, unique=True))
    out = []
    for case_id in ids:
        turns = draw(st.integers(1, 4))
        messages = tuple(
            {
                "role": "user" if i % 2 == 0 else "assistant",
                "content": _content(draw, i == turns - 1 and i % 2 == 1),
            }
            for i in range(turns)
        )
        if any(isinstance(m["content"], str) and not m["content"].strip() for m in messages):
            messages = ({"role": "user", "content": "fallback"},)
        system = draw(
            st.none()
            | _solid.filter(lambda s: not s.lstrip().startswith("["))
            | st.lists(_solid.map(lambda t: {"type": "text", "text": t}), min_size=1, max_size=2)
        )
        regex = draw(_text.map(re.escape))
        expected = draw(
            st.none()
            | st.sampled_from(
                [{"contains": "x"}, {"contains": ["a", "b"]}, {"equals": "y"}, {"regex": regex}]
            )
        )
        out.append(
            Case(
                id=case_id,
                messages=messages,
                system=system,
                max_tokens=draw(st.none() | st.integers(1, MAX_TOKENS_LIMIT)),
                temperature=draw(st.none() | st.floats(0, 1)),
                stop_sequences=draw(
                    st.none() | st.lists(_text.filter(bool), min_size=1, max_size=4).map(tuple)
                ),
                user_id=draw(st.none() | _solid),
                tags=tuple(draw(st.lists(_solid, max_size=3))),
                expected=expected,
                metadata=draw(st.none() | st.dictionaries(_text, _json, max_size=3)),
            )
        )
    return out


def _row(case: Case) -> dict[str, Any]:
    row: dict[str, Any] = {"id": case.id, "messages": list(case.messages)}
    for name in FIELDS[3:]:
        if name in FEATURE_FIELDS:  # request features ride in Case.params (tests/test_features.py)
            continue
        value = getattr(case, name)
        if value is not None and value != ():
            row[name] = list(value) if isinstance(value, tuple) else value
    return row


def _write(cases: list[Case], path: Path) -> None:
    """An independent writer: nested values as JSON text in CSV, a mix of native and JSON in parquet."""
    rows = [_row(c) for c in cases]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return
    nested = {"messages", "expected", "metadata"}
    if path.suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(FIELDS)
            for r in rows:
                cells = []
                for name in FIELDS:
                    value = r.get(name)
                    if value is None:
                        cells.append("")
                    elif name in nested or isinstance(value, list):
                        cells.append(json.dumps(value))
                    else:
                        cells.append(repr(value) if isinstance(value, float) else str(value))
                writer.writerow(cells)
        return
    columns = {
        name: [
            json.dumps(r[name])
            if name in nested | {"system"} and name in r and not isinstance(r[name], str)
            else r.get(name)
            for r in rows
        ]
        for name in FIELDS
        if name != "prompt"
    }
    schema = {name: pl.String() for name in columns} | {
        "max_tokens": pl.Int64(),
        "temperature": pl.Float64(),
        "stop_sequences": pl.List(pl.String()),
        "tags": pl.List(pl.String()),
    }
    pl.DataFrame(columns, schema=schema).write_parquet(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=_cases(), fmt=st.sampled_from(["jsonl", "csv", "parquet"]))
def test_valid_cases_round_trip_through_every_format(tmp_path: Path, cases: list[Case], fmt: str) -> None:
    path = tmp_path / f"round.{fmt}"
    _write(cases, path)
    assert _unlined(load_cases(path)) == cases
