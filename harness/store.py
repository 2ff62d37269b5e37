"""The results sink: a crash-safe, append-only store of `CallRecord`s under `results/<run_id>/`.

Layout of a run directory::

    manifest.json                 written atomically (tmp file + fsync + os.replace)
    calls.parquet                 built at `close()`: one row per call_id, columns = CALL_SCHEMA
    parts/journal-<S>-<NNNNN>.jsonl   one JSON line per record, appended as each call finishes
    parts/part-<S>-<NNNNN>.parquet    the same rows once the journal chunk is full (or at close)
    .lock                         flock held while a process has the run open

`<S>` is the store *session*: one per process that opens the run (`create` or
`resume`), sortable by time. The events sink keys its crash recovery on it.

Durability: every `write()` is one `os.write` of one complete line to the
journal, so the line is in the kernel's page cache when `write()` returns and a
`kill -9` loses no finished call; only the line being written at the instant of
the kill can be torn, and readers ignore a torn last line. There is no fsync
per record: power loss or a kernel crash may lose the last seconds of records
(out of scope; parts and the manifest are fsynced before their rename).

Every `chunk_rows` records the journal is closed, a fresh one is opened, and a
background thread converts the full one into a parquet part (tmp name, fsync,
`os.replace`) and then deletes it. Memory stays bounded: the store keeps no
rows in memory, only the current file handle.

`parts/` is kept after `calls.parquet` is built: the chunks are the source of
truth (they carry the session of every row, which PostHog event recovery needs,
and a later `--resume` appends to them); `calls.parquet` is derived from them
at every close. Readers use `load_calls`, which prefers `calls.parquet` when it
is newer than every part and no journal is left. (If parts/ is removed, the
table is read alone, and a resume seeds a first part from it.)

Dedup rule (final table, `load_calls`, resume): one row per `call_id`; a
finished row (`ok`/`error`) beats a `cancelled` one, and otherwise the later
row wins. On resume a cancelled call does not count as finished.

This module must not compute statistics, and it never stores a secret: values
equal to a known secret are replaced by `[secure]` in the manifest and journal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import re
import secrets as _secrets
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from harness.config import SECRET_ENV_VARS
from harness.errors import StorageError
from harness.records import CALL_SCHEMA, CallRecord

__all__ = [
    "CHUNK_ROWS",
    "MIN_FREE_BYTES",
    "REDACTED",
    "RunStore",
    "atomic_write_bytes",
    "default_secrets",
    "load_calls",
    "read_journal",
    "redact",
]

CHUNK_ROWS = 2000
MIN_FREE_BYTES = 50 * 1024 * 1024
REDACTED = "[secure]"
_MIN_SECRET_LEN = 8  # shorter values would redact ordinary words

_COLUMNS = list(CALL_SCHEMA)
_NAME_RE = re.compile(r"^(journal|part)-([0-9A-Za-z]+)-(\d+)\.(jsonl|parquet)$")
_JSON_OPTS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NAIVE_UTC


# ---------------------------------------------------------------- secrets


def default_secrets() -> list[str]:
    """The API keys present in the environment: values that must never reach a file."""
    return [v for name in SECRET_ENV_VARS if (v := os.environ.get(name, "").strip())]


def _usable(secrets: Iterable[str]) -> list[str]:
    return sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)


def redact(obj: Any, secrets: Sequence[str]) -> Any:
    """A copy of `obj` (dicts, lists, tuples, strings) with every secret substring replaced by `[secure]`."""
    keys = _usable(secrets)
    if not keys:
        return obj
    return _redact(obj, keys)


def _redact(obj: Any, keys: list[str]) -> Any:
    if isinstance(obj, str):
        for key in keys:
            if key in obj:
                obj = obj.replace(key, REDACTED)
        return obj
    if isinstance(obj, dict):
        return {_redact(k, keys): _redact(v, keys) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_redact(v, keys) for v in obj]
    return obj


def redact_bytes(line: bytes, secret_bytes: Sequence[bytes]) -> bytes:
    """Byte-level redaction of a serialized line (keys need no JSON escaping, so this is exact)."""
    for key in secret_bytes:
        if key in line:
            line = line.replace(key, REDACTED.encode())
    return line


# ---------------------------------------------------------------- files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a tmp file, fsync and `os.replace`: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _append_all(fd: int, data: bytes, path: Path) -> None:
    """One `os.write` per line in practice; loops only on a short write."""
    view = memoryview(data)
    try:
        while view:
            n = os.write(fd, view)
            view = view[n:]
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _check_room(directory: Path, min_free_bytes: int) -> None:
    try:
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        raise StorageError(f"cannot use results directory {directory}: {exc.strerror or exc}") from exc
    if free < min_free_bytes:
        raise StorageError(
            f"not enough free disk space in {directory}: {free // 2**20} MB free, "
            f"at least {min_free_bytes // 2**20} MB needed"
        )


def _probe_writable(directory: Path) -> None:
    probe = directory / f".probe-{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"probe\n" * 64)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise StorageError(f"results directory {directory} is not writable: {exc.strerror or exc}") from exc


def _new_session_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + _secrets.token_hex(2)


# ---------------------------------------------------------------- reading


def read_journal(path: Path) -> pl.DataFrame:
    """Rows of one journal file with CALL_SCHEMA dtypes; a torn last line (a kill mid-write) is ignored."""
    data = path.read_bytes()
    end = data.rfind(b"\n")
    data = data[: end + 1] if end >= 0 else b""
    if not data.strip():
        return pl.DataFrame(schema=CALL_SCHEMA)
    try:
        return pl.read_ndjson(io.BytesIO(data), schema=CALL_SCHEMA)
    except (pl.exceptions.PolarsError, ValueError):
        # A damaged line inside the file (should not happen with whole-line appends): keep the good ones.
        good = []
        for line in data.splitlines():
            try:
                if isinstance(orjson.loads(line), dict):
                    good.append(line)
            except orjson.JSONDecodeError:
                continue
        if not good:
            return pl.DataFrame(schema=CALL_SCHEMA)
        return pl.read_ndjson(io.BytesIO(b"\n".join(good) + b"\n"), schema=CALL_SCHEMA)


def _sources(run_dir: Path) -> list[tuple[str, int, Path]]:
    """(session, seq, file) of every chunk, in write order; a part wins over its own journal (same rows)."""
    chunks: dict[tuple[str, int], Path] = {}
    parts_dir = run_dir / "parts"
    if parts_dir.is_dir():
        for path in parts_dir.iterdir():
            m = _NAME_RE.match(path.name)
            if not m:
                continue
            key = (m.group(2), int(m.group(3)))
            if m.group(1) == "part" or key not in chunks:
                chunks[key] = path
    return [(s, q, p) for (s, q), p in sorted(chunks.items())]


def _part_of(journal: Path) -> Path:
    return journal.with_name(journal.name.replace("journal-", "part-", 1).replace(".jsonl", ".parquet"))


def _frame_of(path: Path) -> pl.LazyFrame:
    if path.suffix == ".parquet":
        return pl.scan_parquet(path).select(_COLUMNS)
    try:
        return read_journal(path).lazy()
    except FileNotFoundError:  # a live run turned it into a part since we listed the directory
        return pl.scan_parquet(_part_of(path)).select(_COLUMNS)


def _all_rows(run_dir: Path) -> pl.LazyFrame | None:
    """Every stored row with its order keys (`_src`, `_row`): the chunks in write order.

    `calls.parquet` is derived from the chunks, so it is read only when there is
    no chunk at all (a run whose parts/ was removed; `resume` seeds a part from it).
    """
    files = [p for _, _, p in _sources(run_dir)]
    final = run_dir / "calls.parquet"
    if not files and final.is_file():
        files = [final]
    if not files:
        return None
    frames = [
        _frame_of(p).with_columns(
            pl.lit(i, dtype=pl.Int64()).alias("_src"), pl.int_range(pl.len(), dtype=pl.Int64()).alias("_row")
        )
        for i, p in enumerate(files)
    ]
    return pl.concat(frames, how="vertical")


def _dedup(rows: pl.LazyFrame) -> pl.LazyFrame:
    """One row per call_id: finished beats cancelled, then the later row wins; kept in write order.

    Duplicates are rare (cancelled then re-run, a part next to its journal), so only
    the key columns are collected; the full rows stream through an anti-join that
    drops the losers, instead of sorting the whole table in memory.
    """
    keys = rows.select("call_id", "status", "_src", "_row").collect()
    dups = keys.filter(pl.col("call_id").is_duplicated())
    if dups.height == 0:
        return rows.select(_COLUMNS)
    losers = (
        dups.with_columns((pl.col("status") != "cancelled").alias("_fin"))
        .sort(["_fin", "_src", "_row"])
        .filter(pl.int_range(pl.len()).over("call_id") < pl.len().over("call_id") - 1)
        .select("_src", "_row")
    )
    return rows.join(losers.lazy(), on=["_src", "_row"], how="anti", maintain_order="left").select(_COLUMNS)


def load_calls(run_dir: Path) -> pl.DataFrame:
    """The run's calls, one row per call_id, CALL_SCHEMA dtypes: `calls.parquet` if current, else parts + journals."""
    run_dir = Path(run_dir)
    final = run_dir / "calls.parquet"
    sources = _sources(run_dir)
    if final.is_file():
        no_journal = all(p.suffix == ".parquet" for _, _, p in sources)
        final_mtime = final.stat().st_mtime_ns
        if no_journal and all(p.stat().st_mtime_ns <= final_mtime for _, _, p in sources):
            return pl.read_parquet(final).select(_COLUMNS).cast(CALL_SCHEMA)  # type: ignore[arg-type]
    rows = _all_rows(run_dir)
    if rows is None:
        return pl.DataFrame(schema=CALL_SCHEMA)
    return _dedup(rows).collect().cast(CALL_SCHEMA)  # type: ignore[arg-type]


def build_calls(run_dir: Path) -> int:
    """Write `calls.parquet` from everything stored (lazy scan, sink to tmp, os.replace); returns its row count."""
    final = run_dir / "calls.parquet"
    tmp = run_dir / f".calls.parquet.tmp-{os.getpid()}"
    rows = _all_rows(run_dir)
    try:
        if rows is None:
            pl.DataFrame(schema=CALL_SCHEMA).write_parquet(tmp)
        else:
            _dedup(rows).cast(CALL_SCHEMA).sink_parquet(tmp)  # type: ignore[arg-type]
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except (OSError, pl.exceptions.PolarsError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StorageError(f"cannot write {final}: {detail}") from exc
    return pl.scan_parquet(final).select(pl.len()).collect().item()


# ---------------------------------------------------------------- the sink


class RunStore:
    """A `Sink` that appends records durably; open with `create` (new run) or `resume` (existing run)."""

    def __init__(
        self,
        run_dir: Path,
        manifest: dict[str, Any],
        lock_fd: int,
        *,
        secrets: Sequence[str],
        chunk_rows: int,
        min_free_bytes: int,
    ) -> None:
        self._run_dir = run_dir
        self._parts = run_dir / "parts"
        self._manifest = manifest
        self._lock_fd: int | None = lock_fd
        self._secrets = _usable(secrets)
        self._secret_bytes = [s.encode() for s in self._secrets]
        self._chunk_rows = max(1, chunk_rows)
        self._min_free = min_free_bytes
        self.session = _new_session_id()
        self._seq = 0
        self._rows = 0
        self._written = 0
        self._fd: int | None = None
        self._journal = self._parts / "unset"
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-parts")
        self._pool.submit(_warm_up).result()  # start the thread and polars' reader now, not mid-run
        self._bg_error: StorageError | None = None
        self._bg_lock = threading.Lock()
        self._open_journal()

    # -- opening

    @classmethod
    def create(
        cls,
        results_dir: Path,
        run_id: str,
        manifest: dict[str, Any],
        *,
        secrets: Sequence[str] | None = None,
        chunk_rows: int = CHUNK_ROWS,
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> RunStore:
        """A new run directory; refuses an existing one and an unwritable or full disk, before any call."""
        results_dir = Path(results_dir)
        if not run_id or "/" in run_id or run_id in {".", ".."}:
            raise StorageError(f"invalid run id {run_id!r}")
        try:
            results_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create results directory {results_dir}: {exc.strerror or exc}"
            ) from exc
        _check_room(results_dir, min_free_bytes)
        run_dir = results_dir / run_id
        try:
            run_dir.mkdir()
        except FileExistsError as exc:
            raise StorageError(f"run directory {run_dir} already exists (use --resume {run_id})") from exc
        except OSError as exc:
            raise StorageError(f"cannot create run directory {run_dir}: {exc.strerror or exc}") from exc
        try:
            (run_dir / "parts").mkdir()
            _probe_writable(run_dir / "parts")
            lock_fd = _lock(run_dir)
        except OSError as exc:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise StorageError(f"cannot write run directory {run_dir}: {exc.strerror or exc}") from exc
        except StorageError:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        keys = [*default_secrets(), *(secrets or ())]
        store = cls(
            run_dir,
            dict(manifest),
            lock_fd,
            secrets=keys,
            chunk_rows=chunk_rows,
            min_free_bytes=min_free_bytes,
        )
        store._manifest.setdefault("sessions", [])
        store._manifest["sessions"] = [*store._manifest["sessions"], store.session]
        try:
            store._write_manifest()
        except StorageError:
            store._abandon()
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return store

    @classmethod
    def resume(
        cls,
        results_dir: Path,
        run_id: str,
        *,
        secrets: Sequence[str] | None = None,
        chunk_rows: int = CHUNK_ROWS,
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> RunStore:
        """Reopen a run: earlier sessions' leftover journals become parts, and a new session starts."""
        run_dir = Path(results_dir) / run_id
        manifest_path = run_dir / "manifest.json"
        if not run_dir.is_dir():
            raise StorageError(f"cannot resume: run directory {run_dir} does not exist")
        try:
            manifest = orjson.loads(manifest_path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StorageError(f"cannot resume: {manifest_path} is missing or unreadable") from exc
        if not isinstance(manifest, dict):
            raise StorageError(f"cannot resume: {manifest_path} is not a JSON object")
        _check_room(run_dir, min_free_bytes)
        try:
            (run_dir / "parts").mkdir(exist_ok=True)
            _probe_writable(run_dir / "parts")
            lock_fd = _lock(run_dir)
        except OSError as exc:
            raise StorageError(f"cannot write run directory {run_dir}: {exc.strerror or exc}") from exc
        try:
            chunks = _sources(run_dir)
            for _, _, path in chunks:  # crashed sessions: no process owns these journals now
                if path.suffix == ".jsonl":
                    _journal_to_part(path)
            if not chunks and (run_dir / "calls.parquet").is_file():
                _seed_part(run_dir)
        except StorageError:
            os.close(lock_fd)
            raise
        keys = [*default_secrets(), *(secrets or ())]
        store = cls(
            run_dir, manifest, lock_fd, secrets=keys, chunk_rows=chunk_rows, min_free_bytes=min_free_bytes
        )
        sessions = store._manifest.get("sessions")
        store._manifest["sessions"] = [*(sessions if isinstance(sessions, list) else []), store.session]
        try:
            store._write_manifest()
        except StorageError:
            store._abandon()
            raise
        return store

    # -- properties

    @property
    def run_dir(self) -> Path:
        return self._run_dir

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as last written (a copy: change it with `update_manifest`)."""
        return dict(self._manifest)

    @property
    def rows_written(self) -> int:
        """Records written by this session (cancelled ones included)."""
        return self._written

    # -- the Sink protocol

    def write(self, record: CallRecord) -> None:
        """Append one record: one line, one `os.write`; a part is cut every `chunk_rows` records."""
        if self._closed:
            raise StorageError(f"results for {self._run_dir} are already closed")
        if self._bg_error is not None:
            raise self._bg_error
        line = orjson.dumps({c: getattr(record, c) for c in _COLUMNS}, option=_JSON_OPTS)
        if self._secret_bytes:
            line = redact_bytes(line, self._secret_bytes)
        assert self._fd is not None
        _append_all(self._fd, line, self._journal)
        self._rows += 1
        self._written += 1
        if self._rows >= self._chunk_rows:
            self._rollover()

    def close(self) -> None:
        """Flush the last chunk, then build `calls.parquet`; raises StorageError if anything failed."""
        if self._closed:
            return
        self._closed = True
        try:
            self._close_journal(convert=True)
            self._pool.shutdown(wait=True)
            build_calls(self._run_dir)
        finally:
            self._unlock()
        if self._bg_error is not None:
            raise self._bg_error

    # -- manifest

    def update_manifest(self, **fields: Any) -> None:
        """Merge `fields` into the manifest and rewrite it atomically (secrets redacted)."""
        self._manifest.update(fields)
        self._write_manifest()

    def _write_manifest(self) -> None:
        self._manifest = redact(self._manifest, self._secrets)
        data = orjson.dumps(self._manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC, default=str)
        atomic_write_bytes(self._run_dir / "manifest.json", data + b"\n")

    # -- resume support

    def finished_call_ids(self) -> set[str]:
        """call_ids that already have a finished (not cancelled) row: a resume skips exactly these."""
        rows = _all_rows(self._run_dir)
        if rows is None:
            return set()
        done = rows.filter(pl.col("status") != "cancelled").select("call_id").unique().collect()
        return set(done["call_id"].to_list())

    def sessions(self) -> list[str]:
        """Store sessions that wrote rows, oldest first (this one included once it has written)."""
        return sorted({s for s, _, _ in _sources(self._run_dir)})

    def records_of_sessions(self, sessions: set[str]) -> Iterator[CallRecord]:
        """Rows written by the given sessions (raw, cancelled included), one chunk in memory at a time.

        The events sink uses it on resume to re-capture calls of crashed sessions
        whose events were never confirmed.
        """
        for session, _, path in _sources(self._run_dir):
            if session not in sessions or session == self.session:
                continue
            frame = (
                pl.read_parquet(path).select(_COLUMNS) if path.suffix == ".parquet" else read_journal(path)
            )
            for row in frame.iter_rows(named=True):
                yield CallRecord(**row)

    # -- internals

    def _open_journal(self) -> None:
        self._journal = self._parts / f"journal-{self.session}-{self._seq:05d}.jsonl"
        try:
            self._fd = os.open(self._journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot write {self._journal}: {exc.strerror or exc}") from exc
        self._rows = 0

    def _close_journal(self, *, convert: bool) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.close(fd)
        journal = self._journal
        if self._rows == 0:
            with contextlib.suppress(OSError):
                journal.unlink()
        elif convert:
            self._pool.submit(self._convert, journal)

    def _rollover(self) -> None:
        _check_room(self._run_dir, self._min_free // 5)
        self._close_journal(convert=True)
        self._seq += 1
        self._open_journal()

    def _convert(self, journal: Path) -> None:
        try:
            _journal_to_part(journal)
        except StorageError as exc:
            with self._bg_lock:
                if self._bg_error is None:
                    self._bg_error = exc

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def _abandon(self) -> None:
        """Release handles without building anything (creation failed)."""
        self._closed = True
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self._pool.shutdown(wait=True)
        self._unlock()


def _seed_part(run_dir: Path) -> None:
    """parts/ was removed: the finished table becomes the first chunk, so new rows add to it."""
    seed = run_dir / "parts" / "part-0-00000.parquet"
    try:
        shutil.copyfile(run_dir / "calls.parquet", seed)
    except OSError as exc:
        raise StorageError(f"cannot write {seed}: {exc.strerror or exc}") from exc


def _warm_up() -> None:
    pl.read_ndjson(io.BytesIO(b"{}\n"), schema=CALL_SCHEMA).head(0).write_parquet(io.BytesIO())


def _journal_to_part(journal: Path) -> None:
    """journal-S-N.jsonl → part-S-N.parquet (tmp, fsync, replace), then delete the journal."""
    part = _part_of(journal)
    tmp = part.with_name(f".{part.name}.tmp-{os.getpid()}")
    try:
        frame = read_journal(journal)
        frame.write_parquet(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, part)
        journal.unlink()
    except (OSError, pl.exceptions.PolarsError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StorageError(f"cannot write {part}: {detail}") from exc


def _lock(run_dir: Path) -> int:
    """An exclusive flock on `<run>/.lock`: two processes must never append to one run (kill -9 releases it)."""
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StorageError(f"run directory {run_dir} is in use by another harness process") from exc
        raise
    return fd
