"""Read a run directory: `calls.parquet` (or its crash-safe `parts/`) and `manifest.json`.

Its one job is to turn whatever the store left on disk into a LazyFrame that follows
`CALL_SCHEMA`, tolerating missing columns and a torn last journal line. It computes
no statistics and never writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from harness.errors import StorageError
from harness.records import CALL_SCHEMA

__all__ = ["conform", "empty_calls", "load_calls", "read_manifest"]

_TS_COLUMNS = [name for name, dtype in CALL_SCHEMA.items() if isinstance(dtype, pl.Datetime)]


def empty_calls() -> pl.LazyFrame:
    """A zero-row frame with the call schema: what a run with no records reads as."""
    return pl.DataFrame(schema=CALL_SCHEMA).lazy()


def conform(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Cast to `CALL_SCHEMA`, adding absent columns as nulls, so readers never guess."""
    present = frame.collect_schema()
    exprs: list[pl.Expr] = []
    for name, dtype in CALL_SCHEMA.items():
        if name not in present:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
        elif name in _TS_COLUMNS and present[name] == pl.String():
            exprs.append(pl.col(name).str.to_datetime(time_zone="UTC", strict=False).cast(dtype).alias(name))
        elif present[name] != dtype:
            exprs.append(pl.col(name).cast(dtype, strict=False).alias(name))
        else:
            exprs.append(pl.col(name))
    return frame.select(exprs)


def _is_current(calls: Path, parts_dir: Path) -> bool:
    """calls.parquet is complete when no journal is left and no part is newer (the store's rule)."""
    if not parts_dir.is_dir():
        return True
    stamp = calls.stat().st_mtime_ns
    for path in parts_dir.iterdir():
        if path.suffix == ".jsonl" or (path.suffix == ".parquet" and path.stat().st_mtime_ns > stamp):
            return False
    return True


def _read_journal(path: Path) -> pl.DataFrame | None:
    """A journal of JSON records; a torn final line (crash mid-write) is dropped."""
    raw = path.read_bytes()
    if not raw.strip():
        return None
    schema = {n: (pl.String() if n in _TS_COLUMNS else d) for n, d in CALL_SCHEMA.items()}
    try:
        frame = pl.read_ndjson(raw, schema=schema, ignore_errors=True)
    except pl.exceptions.PolarsError:
        good: list[dict[str, Any]] = []
        for line in raw.splitlines():  # only on a damaged journal: the crash tail, not the run
            try:
                good.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        if not good:
            return None
        frame = pl.DataFrame(good, schema=schema, strict=False)
    return frame


def load_calls(run_dir: Path) -> pl.LazyFrame:
    """The run's calls as a LazyFrame in `CALL_SCHEMA`; parts and journals when no calls.parquet."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StorageError(f"{run_dir}: not a run directory")
    calls = run_dir / "calls.parquet"
    parts_dir = run_dir / "parts"
    if calls.is_file() and _is_current(calls, parts_dir):
        try:
            return conform(pl.scan_parquet(calls))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise StorageError(f"{calls}: unreadable ({exc})") from exc
    try:  # the store knows its own chunk order and dedup rules (resumed sessions, cancelled rows)
        from harness.store import load_calls as store_load_calls

        stored = store_load_calls(run_dir)
        if stored.height or not any(parts_dir.glob("*.*")):
            return conform(stored.lazy())
    except (ImportError, pl.exceptions.PolarsError, OSError):
        pass
    frames: list[pl.LazyFrame] = []
    for part in sorted(parts_dir.glob("*.parquet")):
        try:
            frames.append(conform(pl.read_parquet(part).lazy()))
        except (pl.exceptions.PolarsError, OSError):
            continue  # a part being written when the run died; its rows are in the journal
    for journal in sorted(parts_dir.glob("*.jsonl")):
        got = _read_journal(journal)
        if got is not None:
            frames.append(conform(got.lazy()))
    if not frames:
        if parts_dir.is_dir() or (run_dir / "manifest.json").is_file():
            return empty_calls()
        raise StorageError(f"{run_dir}: no calls.parquet and no parts/ (is this a run directory?)")
    # A call can be in a part and in the journal that preceded it: keep its first copy.
    return pl.concat(frames, how="vertical").unique(subset=["call_id"], keep="first", maintain_order=True)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest as a dict, or {} when absent or unreadable (the report still works)."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
