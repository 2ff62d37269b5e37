"""The broken-dataset corpus: each file in tests/data/bad/ names exactly its file, line and field.

`tests/data/bad/EXPECTED.json` is the single source of the expectations, so the
CLI-level tests (exit code 2, no traceback, no results directory) can reuse it.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from harness.dataset import MAX_LINE_BYTES, load_cases, validate
from harness.errors import DatasetError, DatasetInvalid

BAD = Path(__file__).parent / "data" / "bad"
EXPECTED = json.loads((BAD / "EXPECTED.json").read_text(encoding="utf-8"))
FILES: dict[str, dict] = EXPECTED["files"]


def _one_problem(problems: list[DatasetError], path: Path, want: dict) -> DatasetError:
    assert len(problems) == 1, [str(p) for p in problems]
    problem = problems[0]
    assert problem.path == str(path)
    assert (problem.line, problem.field) == (want["line"], want["field"]), str(problem)
    assert want["message"] in problem.message, str(problem)
    where = f"{path}:{want['line']}" if want["line"] is not None else str(path)
    assert str(problem).startswith(f"{where}: {want['field']}: ")
    return problem


def test_manifest_lists_every_file_and_there_are_enough() -> None:
    on_disk = {p.name for p in BAD.iterdir() if p.name != "EXPECTED.json"}
    assert on_disk == set(FILES)
    assert len(FILES) + len(EXPECTED["generated"]) >= 25


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_bad_file_names_its_line_and_field(name: str) -> None:
    path = BAD / name
    want = FILES[name]
    _one_problem(validate(path), path, want)
    with pytest.raises(DatasetInvalid) as raised:
        load_cases(path)
    _one_problem(raised.value.problems, path, want)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("name", sorted(FILES))
def test_skip_invalid_skips_bad_rows_but_not_bad_files(name: str) -> None:
    path = BAD / name
    want = FILES[name]
    file_level = want["line"] is None or (want["line"] == 1 and name.endswith(".csv"))
    if file_level:
        with pytest.raises(DatasetInvalid):
            load_cases(path, skip_invalid=True)
        return
    result = load_cases(path, skip_invalid=True)
    _one_problem(result.skipped, path, want)
    assert result.cases, "the valid rows around the bad one still load"
    assert want["line"] not in {case.line for case in result.cases}


def test_a_ten_megabyte_line_is_refused_without_holding_it(tmp_path: Path) -> None:
    spec = EXPECTED["generated"]["huge_line.jsonl"]
    path = tmp_path / "huge_line.jsonl"
    with path.open("wb") as fh:
        fh.write(b'{"id": "a", "prompt": "hi"}\n')
        fh.write(b'{"id": "b", "prompt": "' + b"x" * (10 * 1024 * 1024) + b'"}\n')
        fh.write(b'{"id": "c", "prompt": "bye"}\n')
    tracemalloc.start()
    try:
        problems = validate(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _one_problem(problems, path, spec)
    assert peak < 3 * MAX_LINE_BYTES, f"peak {peak / 1e6:.1f} MB"
    kept = load_cases(path, skip_invalid=True)
    assert [c.id for c in kept.cases] == ["a", "c"]


def test_a_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.jsonl"
    _one_problem(validate(path), path, {"line": None, "field": "(file)", "message": "no such file"})


def test_every_problem_in_a_file_is_listed_not_only_the_first(tmp_path: Path) -> None:
    row_level = [n for n in FILES if n.endswith(".jsonl") and FILES[n]["line"] == 2 and n != "non_utf8.jsonl"]
    bodies = [(BAD / n).read_text(encoding="utf-8").splitlines()[1] for n in row_level]
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(bodies) + "\n", encoding="utf-8")
    problems = validate(path)
    assert len(bodies) > 20
    assert {p.line for p in problems} == set(range(1, len(bodies) + 1))


def test_a_csv_cell_over_the_limit_stops_the_read_with_one_problem(tmp_path: Path) -> None:
    spec = EXPECTED["generated"]["huge_cell.csv"]
    path = tmp_path / "huge_cell.csv"
    path.write_text('id,prompt\na,"' + ("y" * 1000 + "\n") * 9000 + '"\nb,ok\n', encoding="utf-8")
    _one_problem(validate(path), path, spec)
