"""Read a dataset file (JSONL, CSV or parquet) into validated `Case`s.

Its one job: turn rows into `Case`s or into `DatasetError`s that each read
`file:line: field: what is wrong`, collecting every problem rather than stopping at
the first. Third-party parser errors (orjson, csv, polars) are translated here and
never escape as anything but `DatasetInvalid`. It must not call the API, plan
calls or know about models.

Lines: JSONL reports the 1-based physical line; CSV the physical line where the
record starts (a quoted cell may span lines); parquet the 1-based row number.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import polars as pl

from harness import graders
from harness.errors import DatasetError, DatasetInvalid
from harness.features import FEATURE_FIELDS, check_features
from harness.records import Case

__all__ = [
    "FIELDS",
    "FORMATS",
    "MAX_LINE_BYTES",
    "MAX_STOP_SEQUENCES",
    "MAX_TOKENS_LIMIT",
    "PROVENANCE_SUFFIX",
    "LoadResult",
    "file_sha256",
    "load_cases",
    "provenance_of",
    "row_problems",
    "validate",
    "write_provenance",
]

MAX_LINE_BYTES = 8 * 1024 * 1024
"""A JSONL line, a CSV line or cell, or a parquet row's text beyond this is refused (memory guard)."""
MAX_TOKENS_LIMIT = 128_000
MAX_STOP_SEQUENCES = 8
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
FIELDS = (
    "id",
    "prompt",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "stop_sequences",
    "user_id",
    "tags",
    "expected",
    "metadata",
    "arrival_offset_s",
    *FEATURE_FIELDS,
)
_JSON_COLUMNS = frozenset(
    {
        "messages",
        "expected",
        "metadata",
        "stop_sequences",
        "thinking",
        "output_config",
        "tools",
        "tool_choice",
    }
)
_PLAIN_TEXT = frozenset({"id", "prompt", "user_id", "system"})
_MISSING = object()
_UNREADABLE = object()  # a cell that could not be decoded: present, already reported


@dataclass(frozen=True)
class LoadResult:
    """The cases of one dataset file, plus what identifies the file for the manifest."""

    cases: list[Case]
    skipped: list[DatasetError] = field(default_factory=list)
    path: str = ""
    sha256: str = ""
    format: str = "jsonl"


def row_problems(raw: dict[str, Any], name: str = "(row)") -> list[DatasetError]:
    """Every problem of one JSON-shaped row (empty when `load_cases` would take it): for importers."""
    problems: list[DatasetError] = []
    _check_row(raw, name, None, problems)
    return problems


# ---------------------------------------------------------------- provenance sidecar
#
# An imported dataset (`harness import posthog`) says where it came from in a sidecar file beside
# it, `<file>.import.json`, with the sha256 of the file it describes: a run records it in its
# manifest only while the file is unchanged (an edited or filtered copy has no provenance).

PROVENANCE_SUFFIX = ".import.json"


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (what `LoadResult.sha256` is for the same file)."""
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def write_provenance(path: Path, info: dict[str, Any]) -> Path:
    """Write `path`'s sidecar: `info` plus the file's sha256."""
    side = Path(str(path) + PROVENANCE_SUFFIX)
    body = {**info, "dataset_sha256": file_sha256(path)}
    side.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    return side


def provenance_of(path: str | Path, sha256: str) -> dict[str, Any] | None:
    """The sidecar of the dataset at `path` when it describes this very file (same sha256), else None."""
    side = Path(str(path) + PROVENANCE_SUFFIX)
    try:
        info = orjson.loads(side.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(info, dict) or info.get("dataset_sha256") != sha256:
        return None
    return info


def validate(path: str | Path) -> list[DatasetError]:
    """Every problem of the dataset at `path` (empty when it is valid): `harness validate`."""
    try:
        load_cases(path)
    except DatasetInvalid as exc:
        return list(exc.problems)
    return []


def load_cases(path: str | Path, *, skip_invalid: bool = False) -> LoadResult:
    """Load and validate a dataset; raise `DatasetInvalid` listing every problem.

    With `skip_invalid`, rows with problems are left out and listed in `skipped`;
    problems of the file as a whole still raise, as does a file with no valid row.
    """
    name = str(path)
    p = Path(path)
    fmt = _check_file(name, p)
    hasher = hashlib.sha256()
    problems: list[DatasetError] = []
    rows: Iterator[tuple[int, dict[str, Any] | None]]
    if fmt == "jsonl":
        rows = _jsonl_rows(name, p, hasher, problems)
    elif fmt == "csv":
        rows = _csv_rows(name, p, hasher, problems)
    else:
        rows = _parquet_rows(name, p, hasher, problems)

    cases: list[Case] = []
    skipped: list[DatasetError] = []
    first_line: dict[str, int] = {}
    for line, raw in rows:
        row_problems = [e for e in problems if e.line == line]
        problems[:] = [e for e in problems if e.line != line]
        case_id, case = (None, None) if raw is None else _check_row(raw, name, line, row_problems)
        if case_id is not None:
            if case_id in first_line:
                first = first_line[case_id]
                row_problems.append(
                    DatasetError(name, line, "id", f"duplicate id {case_id!r} (first on line {first})")
                )
            else:
                first_line[case_id] = line
        if row_problems:
            skipped.extend(row_problems)
        elif case is not None:
            cases.append(case)
    skipped.extend(problems)  # problems not tied to a yielded row (e.g. a CSV parse error)
    skipped.sort(key=lambda e: e.line or 0)

    if skipped and not skip_invalid:
        raise DatasetInvalid(skipped)
    if not cases:
        none_left = DatasetError(name, None, "(file)", "no valid cases" if skipped else "no cases in file")
        raise DatasetInvalid([*skipped, none_left])
    return LoadResult(cases=cases, skipped=skipped, path=name, sha256=hasher.hexdigest(), format=fmt)


# ---------------------------------------------------------------- the file as a whole


def _file_error(name: str, message: str, line: int | None = None, field: str = "(file)") -> DatasetInvalid:
    return DatasetInvalid([DatasetError(name, line, field, message)])


def _check_file(name: str, p: Path) -> str:
    """The format of `p`, or `DatasetInvalid` when it is not a readable, non-empty dataset file."""
    try:
        if not p.exists():
            raise _file_error(name, "no such file")
        if p.is_dir():
            raise _file_error(name, "is a directory, not a dataset file")
        fmt = FORMATS.get(p.suffix.lower())
        if fmt is None:
            known = ", ".join(FORMATS)
            raise _file_error(name, f"unknown extension {p.suffix or '(none)'!r}: use one of {known}")
        if p.stat().st_size == 0:
            raise _file_error(name, "empty file")
    except OSError as exc:
        raise _file_error(name, f"cannot read: {exc.strerror or exc}") from None
    return fmt


def _open(name: str, p: Path) -> IO[bytes]:
    try:
        return p.open("rb")
    except OSError as exc:
        raise _file_error(name, f"cannot read: {exc.strerror or exc}") from None


def _physical_lines(fh: IO[bytes], hasher: Any) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per physical line; None for a line over `MAX_LINE_BYTES`, never held whole."""
    lineno = 0
    while chunk := fh.readline(MAX_LINE_BYTES + 1):
        hasher.update(chunk)
        lineno += 1
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            while more := fh.readline(1 << 20):
                hasher.update(more)
                if more.endswith(b"\n"):
                    break
            yield lineno, None
            continue
        yield lineno, chunk


def _decode(raw: bytes, first: bool) -> tuple[str, str | None]:
    """The text of a line and, if its bytes are not UTF-8, what is wrong."""
    if first and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return raw.decode(
            "utf-8", "replace"
        ), f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"


_MIB = MAX_LINE_BYTES // (1024 * 1024)
_TOO_LONG = f"line longer than {_MIB} MiB (harness.dataset.MAX_LINE_BYTES)"


# ---------------------------------------------------------------- JSONL


def _jsonl_rows(
    name: str, p: Path, hasher: Any, problems: list[DatasetError]
) -> Iterator[tuple[int, dict[str, Any] | None]]:
    with _open(name, p) as fh:
        for line, raw in _physical_lines(fh, hasher):
            if raw is None:
                problems.append(DatasetError(name, line, "(size)", _TOO_LONG))
                yield line, None
                continue
            text, bad = _decode(raw, line == 1)
            if bad:
                problems.append(DatasetError(name, line, "(encoding)", bad))
                yield line, None
                continue
            if not text.strip():
                continue
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                hint = "; the last line looks truncated" if not raw.endswith(b"\n") else ""
                problems.append(DatasetError(name, line, "(json)", f"invalid JSON: {exc}{hint}"))
                yield line, None
                continue
            if not isinstance(value, dict):
                problems.append(
                    DatasetError(name, line, "(row)", f"must be a JSON object, got {_kind(value)}")
                )
                yield line, None
                continue
            yield line, value


# ---------------------------------------------------------------- CSV


def _csv_rows(
    name: str, p: Path, hasher: Any, problems: list[DatasetError]
) -> Iterator[tuple[int, dict[str, Any] | None]]:
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))
    bad_lines: dict[int, str] = {}
    state = {"aborted": False}

    def text_lines(fh: IO[bytes]) -> Iterator[str]:
        for line, raw in _physical_lines(fh, hasher):
            if raw is None:
                problems.append(
                    DatasetError(name, line, "(size)", f"{_TOO_LONG}; the rest of the file is not read")
                )
                state["aborted"] = True
                return
            text, bad = _decode(raw, line == 1)
            if bad:
                bad_lines[line] = bad
            yield text

    with _open(name, p) as fh:
        reader = csv.reader(text_lines(fh), strict=True)
        header: list[str] | None = None
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                if state["aborted"]:
                    break
                span = (
                    f" (a quoted cell opened here runs to line {reader.line_num})"
                    if reader.line_num > start
                    else ""
                )
                if "field limit" in str(exc):  # the reader cannot resync after an oversized cell
                    tail = "; the rest of the file is not read"
                    problems.append(
                        DatasetError(name, start, "(size)", f"cell longer than {_MIB} MiB{span}{tail}")
                    )
                    break
                problems.append(DatasetError(name, start, "(csv)", f"cannot parse this record: {exc}{span}"))
                yield start, None
                continue
            end = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            encoding = [(n, bad_lines[n]) for n in range(start, end + 1) if n in bad_lines]
            if header is None:
                if encoding:
                    raise _file_error(name, encoding[0][1], encoding[0][0], "(encoding)")
                header = [c.strip() for c in cells]
                _check_columns(name, header, start)
                continue
            if encoding:
                line, message = encoding[0]
                problems.append(DatasetError(name, start, "(encoding)", f"line {line}: {message}"))
                yield start, None
                continue
            if len(cells) != len(header):
                problems.append(
                    DatasetError(
                        name,
                        start,
                        "(csv)",
                        f"{len(cells)} fields but the header has {len(header)} (an unquoted comma or quote?)",
                    )
                )
                yield start, None
                continue
            found: list[DatasetError] = []
            row = _csv_record(header, cells, _Row(name, start, found).bad)
            problems.extend(found)
            yield start, row
        if header is None and not problems:
            raise _file_error(name, "no header row and no cases")


def _check_columns(name: str, columns: list[str], line: int | None) -> None:
    """Header (CSV) or schema (parquet) problems are problems of the whole file."""
    errors: list[DatasetError] = []
    seen: set[str] = set()
    for col in columns:
        if col in seen:
            errors.append(DatasetError(name, line, col, "column appears twice"))
        seen.add(col)
        if col not in FIELDS:
            errors.append(DatasetError(name, line, col or "(column)", _unknown(col)))
    if "id" not in seen:
        errors.append(DatasetError(name, line, "id", "no `id` column"))
    if "prompt" not in seen and "messages" not in seen:
        errors.append(DatasetError(name, line, "prompt", "no `prompt` or `messages` column"))
    if errors:
        raise DatasetInvalid(errors)


def _csv_record(header: list[str], cells: list[str], bad: Callable[[str, str], None]) -> dict[str, Any]:
    """One CSV record as the JSON-shaped dict `_check_row` expects; empty cells are absent."""
    row: dict[str, Any] = {}
    for col, cell in zip(header, cells, strict=True):
        if cell == "":
            continue
        value = _text_cell(col, cell, bad, "CSV")
        if value is not _MISSING:
            row[col] = value
    return row


def _text_cell(col: str, cell: str, bad: Callable[[str, str], None], where: str) -> Any:
    """Decode a CSV (or parquet string) cell: JSON columns, comma tags, numbers."""
    head = cell.lstrip()[:1]
    if col in _JSON_COLUMNS or (col in ("system", "tags") and head == "["):
        try:
            return orjson.loads(cell)
        except orjson.JSONDecodeError as exc:
            bad(col, f"not valid JSON ({exc}); in {where} this column holds a JSON-encoded value")
            return _UNREADABLE
    if col == "tags":
        return [t.strip() for t in cell.split(",") if t.strip()]
    if col in ("max_tokens", "top_k"):
        try:
            return int(cell.strip())
        except ValueError:
            bad(col, f"must be an integer, got {_show(cell)}")
            return _UNREADABLE
    if col in ("temperature", "top_p", "arrival_offset_s"):
        try:
            return float(cell.strip())
        except ValueError:
            bad(col, f"must be a number, got {_show(cell)}")
            return _UNREADABLE
    return cell


# ---------------------------------------------------------------- parquet


def _parquet_rows(
    name: str, p: Path, hasher: Any, problems: list[DatasetError]
) -> Iterator[tuple[int, dict[str, Any] | None]]:
    with _open(name, p) as fh:
        while block := fh.read(1 << 20):
            hasher.update(block)
    try:
        frame = pl.read_parquet(p)
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _file_error(name, f"not a readable parquet file: {first}") from None
    _check_columns(name, list(frame.columns), None)
    if frame.height == 0:
        raise _file_error(name, "no rows")
    for index, values in enumerate(frame.iter_rows(named=True)):
        line = index + 1
        found: list[DatasetError] = []
        bad = _Row(name, line, found).bad
        row: dict[str, Any] = {}
        for col, value in values.items():
            if value is None:
                continue
            if isinstance(value, str) and (
                col not in _PLAIN_TEXT or (col == "system" and value.lstrip()[:1] == "[")
            ):
                value = _text_cell(col, value, bad, "parquet")
            elif col == "max_tokens" and isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                value = _drop_nulls(value)
            if value is not _MISSING:
                row[col] = value
        if _text_size(row) > MAX_LINE_BYTES:
            bad("(size)", f"row text longer than {_MIB} MiB")
            row = {}
        problems.extend(found)
        yield line, row if not found else None


def _drop_nulls(value: Any) -> Any:
    """Native parquet structs carry every field of the column's struct type; absent ones are null."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _text_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_size(v) for v in value.values())
    if isinstance(value, list):
        return sum(_text_size(v) for v in value)
    return 8


# ---------------------------------------------------------------- one row


class _Row:
    """Collects the problems of one row so that every one is reported."""

    def __init__(self, name: str, line: int | None, problems: list[DatasetError]) -> None:
        self.name, self.line, self.problems = name, line, problems

    def bad(self, field: str, message: str) -> None:
        self.problems.append(DatasetError(self.name, self.line, field, message))


def _check_row(
    raw: dict[str, Any], name: str, line: int | None, problems: list[DatasetError]
) -> tuple[str | None, Case | None]:
    """Validate one JSON-shaped row: (its id if usable, its `Case` if it has no problem); problems appended."""
    r = _Row(name, line, problems)
    before = len(problems)
    for key in raw:
        if key not in FIELDS:
            r.bad(str(key), _unknown(str(key)))
    present = set(raw)
    raw = {k: v for k, v in raw.items() if v is not _UNREADABLE}

    case_id = _id_like(r, "id", raw.get("id", _MISSING), required=True)
    has_prompt, has_messages = "prompt" in present, "messages" in present
    messages: tuple[dict[str, Any], ...] = ()
    if has_prompt and has_messages:
        r.bad("prompt", "give either `prompt` or `messages`, not both")
    elif "prompt" in raw:
        prompt = raw["prompt"]
        if not isinstance(prompt, str):
            r.bad("prompt", f"must be a string, got {_kind(prompt)}")
        elif not prompt.strip():
            r.bad("prompt", "empty or whitespace-only")
        else:
            messages = ({"role": "user", "content": prompt},)
    elif "messages" in raw:
        messages = _messages(r, raw["messages"])
    elif not has_prompt and not has_messages:
        r.bad("prompt", "missing: give `prompt` (a string) or `messages` (a list of turns)")

    system = _system(r, raw.get("system"))
    max_tokens = raw.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int)
        or isinstance(max_tokens, bool)
        or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        r.bad("max_tokens", f"must be an integer from 1 to {MAX_TOKENS_LIMIT}, got {_show(max_tokens)}")
    temperature = raw.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, int | float) or isinstance(temperature, bool):
            r.bad("temperature", f"must be a number from 0 to 1, got {_kind(temperature)}")
        elif not (math.isfinite(temperature) and 0 <= temperature <= 1):
            r.bad("temperature", f"must be from 0 to 1, got {temperature!r}")
        else:
            temperature = float(temperature)
    stops = _string_list(r, "stop_sequences", raw.get("stop_sequences"), limit=MAX_STOP_SEQUENCES)
    user_id = _id_like(r, "user_id", raw.get("user_id", _MISSING), required=False)
    tags_value = raw.get("tags")
    if isinstance(tags_value, str):
        r.bad("tags", "must be a list of strings (a comma-separated string is only for CSV)")
        tags = None
    else:
        tags = _string_list(r, "tags", tags_value, limit=None)
    expected = _expected(r, raw.get("expected"))
    metadata = raw.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        r.bad("metadata", f"must be an object, got {_kind(metadata)}")
    params = check_features(raw, r.bad, max_tokens=max_tokens, temperature=temperature)
    offset = raw.get("arrival_offset_s")
    if offset is not None and (
        isinstance(offset, bool)
        or not isinstance(offset, int | float)
        or not math.isfinite(offset)
        or offset < 0
    ):
        r.bad("arrival_offset_s", f"must be a number of seconds >= 0, got {offset!r}")

    if len(problems) > before or case_id is None:
        return case_id, None
    return case_id, Case(
        id=case_id,
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        stop_sequences=stops,
        user_id=user_id,
        tags=tags or (),
        expected=expected,
        metadata=metadata,
        params=params or None,
        arrival_offset_s=float(offset) if offset is not None else None,
        line=line,
    )


def _id_like(r: _Row, field: str, value: Any, *, required: bool) -> str | None:
    if value is _MISSING or value is None:
        if required:
            r.bad(field, "missing (every case needs a unique id)")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        r.bad(field, f"must be a string or an integer, got {_kind(value)}")
        return None
    text = str(value)
    if not text.strip():
        r.bad(field, "empty or whitespace-only")
        return None
    return text


def _messages(r: _Row, value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list):
        r.bad("messages", f"must be a list of {{role, content}} turns, got {_kind(value)}")
        return ()
    if not value:
        r.bad("messages", "empty list: give at least one user turn")
        return ()
    out: list[dict[str, Any]] = []
    previous: str | None = None
    for i, turn in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(turn, dict):
            r.bad(where, f"must be an object with `role` and `content`, got {_kind(turn)}")
            previous = None
            continue
        for key in turn:
            if key not in ("role", "content"):
                r.bad(f"{where}.{key}", "unknown key in a message (only `role` and `content`)")
        role = turn.get("role")
        if role not in ("user", "assistant"):
            hint = "; put a system prompt in the `system` field" if role == "system" else ""
            r.bad(f"{where}.role", f"must be 'user' or 'assistant', got {_show(role)}{hint}")
        elif i == 0 and role != "user":
            r.bad(f"{where}.role", "the first turn must be 'user'")
        elif role == previous:
            r.bad(
                f"{where}.role",
                f"two {role!r} turns in a row (messages[{i - 1}] is also {role!r}): roles must alternate",
            )
        last_assistant = i == len(value) - 1 and role == "assistant"
        _content(r, f"{where}.content", turn.get("content", _MISSING), last_assistant)
        previous = role if isinstance(role, str) else None
        out.append({"role": role, "content": turn.get("content")})
    return tuple(out)


def _content(r: _Row, where: str, content: Any, prefill: bool) -> None:
    if content is _MISSING:
        r.bad(where, "missing")
        return
    if isinstance(content, str):
        if not content.strip():
            r.bad(where, "empty or whitespace-only text")
        elif prefill and content != content.rstrip():
            r.bad(where, "a final assistant turn (prefill) must not end with whitespace; the API refuses it")
        return
    if not isinstance(content, list):
        r.bad(where, f"must be a string or a list of content blocks, got {_kind(content)}")
        return
    if not content:
        r.bad(where, "empty list of content blocks")
        return
    for j, block in enumerate(content):
        bw = f"{where}[{j}]"
        if not isinstance(block, dict):
            r.bad(bw, f"a content block must be an object with a `type`, got {_kind(block)}")
            continue
        kind = block.get("type")
        if not isinstance(kind, str) or not kind:
            r.bad(f"{bw}.type", f"must be a non-empty string, got {_show(kind)}")
        elif kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                r.bad(f"{bw}.text", f"a text block needs a string `text`, got {_kind(text)}")
            elif not text.strip():
                r.bad(f"{bw}.text", "empty or whitespace-only text")


def _system(r: _Row, value: Any) -> str | list[dict[str, Any]] | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            r.bad("system", "empty or whitespace-only (leave the field out instead)")
            return None
        return value
    if not isinstance(value, list) or not value:
        r.bad("system", f"must be a string or a non-empty list of text blocks, got {_kind(value)}")
        return None
    before = len(r.problems)
    for j, block in enumerate(value):
        if not isinstance(block, dict) or block.get("type") != "text":
            r.bad(f"system[{j}]", "must be a text block {'type': 'text', 'text': ...}")
        elif not isinstance(block.get("text"), str) or not block["text"].strip():
            r.bad(f"system[{j}].text", "must be a non-empty string")
    return value if len(r.problems) == before else None


def _string_list(r: _Row, field: str, value: Any, *, limit: int | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        r.bad(field, f"must be a list of strings, got {_kind(value)}")
        return None
    if limit is not None and len(value) > limit:
        r.bad(field, f"at most {limit} entries, got {len(value)}")
        return None
    ok = True
    for i, item in enumerate(value):
        if not isinstance(item, str):
            r.bad(f"{field}[{i}]", f"must be a string, got {_kind(item)}")
            ok = False
        elif not item or (not item.strip() and field != "stop_sequences"):
            r.bad(f"{field}[{i}]", "empty" if not item else "whitespace-only")
            ok = False
    return tuple(value) if ok and value else None


def _expected(r: _Row, value: Any) -> dict[str, Any] | None:
    """The case's grader, checked by `harness.graders.validate` (every problem with its field path)."""
    if value is None:
        return None
    before = len(r.problems)
    graders.validate(value, r.bad)
    return None if len(r.problems) > before else dict(value)


# ---------------------------------------------------------------- wording


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _unknown(key: str) -> str:
    near = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else f" (known: {', '.join(FIELDS)})"
    return f"unknown field{hint}"
