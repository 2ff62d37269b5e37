"""The calls sink: a crash-safe, append-only store of `CallRecord`s in a run directory (`harness.rundir`).

Every `write()` is one `os.write` of one complete JSON line to this session's
journal (`RunDir.calls_journal`), so the line is in the kernel's page cache when
`write()` returns and a `kill -9` loses no finished call; only the line being
written at the instant of the kill can be torn, and the reader ignores a torn last
line. There is no fsync per record: power loss or a kernel crash may lose the last
seconds of records (out of scope; parts and the manifest are fsynced).

Every `chunk_rows` records the journal is closed, a fresh one is opened, and a
background thread converts the full one into a parquet part and deletes it, so
memory stays bounded: the store keeps no rows, only the current file handle. At
`close()` the last chunk is converted and `calls.parquet` is built. Reading, the
dedup rule and the layout belong to `RunDir`.

This module computes no statistics and stores no secret: values equal to a known
secret become `[secure]` (`harness.secrets`). With `store_text` off, the answer's
text and tool calls are left out of the row (a store setting: the events still carry them).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from harness.errors import StorageError
from harness.records import CALL_SCHEMA, CallRecord
from harness.rundir import MIN_FREE_BYTES, RunDir, append_all, journal_to_part, warm_up
from harness.secrets import env_secrets, redact_bytes, usable

__all__ = ["CHUNK_ROWS", "RunStore"]

CHUNK_ROWS = 2000

_COLUMNS = list(CALL_SCHEMA)
_JSON_OPTS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NAIVE_UTC


class RunStore:
    """A `Sink` that appends records durably to a `RunDir` opened for writing."""

    def __init__(
        self,
        run: RunDir,
        *,
        secrets: Iterable[str] = (),
        chunk_rows: int = CHUNK_ROWS,
        min_free_bytes: int = MIN_FREE_BYTES,
        store_text: bool = True,
        owns_run: bool = False,
    ) -> None:
        self.run = run
        self._secret_bytes = [s.encode() for s in usable([*env_secrets(), *secrets])]
        self._chunk_rows = max(1, chunk_rows)
        self._min_free = min_free_bytes
        self._store_text = store_text
        self._owns_run = owns_run
        self._seq = 0
        self._rows = 0
        self._written = 0
        self._fd: int | None = None
        self._journal = run.calls_journal(0)
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-parts")
        self._pool.submit(warm_up).result()  # start the thread and polars' reader now, not mid-run
        self._bg_error: StorageError | None = None
        self._bg_lock = threading.Lock()
        self._open_journal()

    @classmethod
    def create(cls, results_dir: Path, run_id: str, manifest: dict[str, Any], **options: Any) -> RunStore:
        """A new run directory and its store (tests and tools; `bench` opens the `RunDir` itself)."""
        dir_options = {k: options[k] for k in ("secrets", "min_free_bytes") if k in options}
        return cls(RunDir.create(results_dir, run_id, manifest, **dir_options), owns_run=True, **options)

    @classmethod
    def resume(cls, results_dir: Path, run_id: str, **options: Any) -> RunStore:
        dir_options = {k: options[k] for k in ("secrets", "min_free_bytes") if k in options}
        return cls(RunDir.resume(results_dir, run_id, **dir_options), owns_run=True, **options)

    @property
    def run_dir(self) -> Path:
        return self.run.path

    @property
    def session(self) -> str:
        assert self.run.session is not None
        return self.run.session

    @property
    def rows_written(self) -> int:
        """Records written by this session (cancelled ones included)."""
        return self._written

    # -- the Sink protocol

    def write(self, record: CallRecord) -> None:
        """Append one record: one line, one `os.write`; a part is cut every `chunk_rows` records."""
        if self._closed:
            raise StorageError(f"results for {self.run.path} are already closed")
        if self._bg_error is not None:
            raise self._bg_error
        row = {c: getattr(record, c) for c in _COLUMNS}
        if not self._store_text:
            row["response_text"] = None
            row["tool_calls"] = None  # a tool's input can quote the prompt
        line = orjson.dumps(row, option=_JSON_OPTS)
        if self._secret_bytes:
            line = redact_bytes(line, self._secret_bytes)
        assert self._fd is not None
        append_all(self._fd, line, self._journal)
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
            self.run.build_calls()
        finally:
            if self._owns_run:
                self.run.close()
        if self._bg_error is not None:
            raise self._bg_error

    # -- internals

    def _open_journal(self) -> None:
        self._journal = self.run.calls_journal(self._seq)
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
        self.run.check_room(self._min_free // 5)
        self._close_journal(convert=True)
        self._seq += 1
        self._open_journal()

    def _convert(self, journal: Path) -> None:
        try:
            journal_to_part(journal)
        except StorageError as exc:
            with self._bg_lock:
                if self._bg_error is None:
                    self._bg_error = exc
