"""`results/<run_id>/`: the one owner of a run directory: its layout, lock, sessions, manifest and calls.

Every module that writes or reads a run directory goes through a `RunDir`: the calls
store, the PostHog sink, the report, `compare`, `--resume` and `events resend`.
Nothing else opens a file of the run directory by name, so the writer and every
reader agree on what is there and which row wins. Layout::

    manifest.json                 written atomically (tmp file + fsync + os.replace), secrets redacted
    .lock                         flock held while a process has the run open for writing
    parts/journal-<S>-<NNNNN>.jsonl   calls, one JSON line per record (written by `harness.store`)
    parts/part-<S>-<NNNNN>.parquet    the same rows once a journal chunk is full (or at close)
    calls.parquet                 one row per call_id, derived from the parts at every close
    events-journal-<S>.jsonl      PostHog events of session S until delivery is confirmed
    events-outbox.jsonl           events PostHog did not acknowledge (`harness events resend`)
    events-state.json             the event sessions confirmed by a clean close
    verdicts.jsonl                `harness grade`'s verdicts, one JSON line per graded call (the last wins)
    originals.parquet             production's measurements of an imported dataset's cases (`harness
                                  import posthog`), written at create, for "original vs replayed"
    batches.jsonl                 batch mode: the Message Batches journal (`harness.batchjournal`
                                  says what its lines mean), appended and fsynced line by line
    summary.parquet, comparison.parquet, report.md, report.html, *.png   the report

`<S>` is a *session*: one per process that opens the run for writing (`create` or
`resume`), sortable by time; the manifest lists them. The event sink keys its crash
recovery on the session of the calls it journaled.

The one dedup rule (the report, a resume and `events resend` all read through it):
one row per `call_id`; a finished row (`ok`/`error`/`expired`) beats a `cancelled` one, and
otherwise the later row wins. A resume re-runs only calls with no finished row. `expired`
(a batch request Anthropic did not reach within the batch's 24 hours) is finished: the call
was submitted and answered, so a plain resume does not submit it again (`--retry-errored`
does, and its row then wins as the later one).
`calls.parquet` is read when it is newer than every part and no journal is left;
otherwise the parts and journals are read (a torn last journal line is ignored). Verdicts
written later by `harness grade` replace the quality columns of their rows (the last line
per call wins); every reader sees them, no measured column changes.

Durability: the parts and the manifest are fsynced before their rename; a journal
line is in the page cache once written, so a `kill -9` loses no finished call. A
batches journal line is fsynced before `append_batch_entry` returns: a batch id must
survive a power loss too, since the batch keeps running (and billing) without us.
This module computes no statistics.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import re
import secrets as _random
import shutil
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from harness.errors import StorageError
from harness.records import CALL_SCHEMA, CallRecord
from harness.secrets import env_secrets, redact, usable

__all__ = ["MIN_FREE_BYTES", "REPORT_FILES", "RunDir", "conform", "read_journal"]

MIN_FREE_BYTES = 50 * 1024 * 1024
MANIFEST = "manifest.json"
CALLS = "calls.parquet"
PARTS = "parts"
LOCK = ".lock"
EVENTS_OUTBOX = "events-outbox.jsonl"
EVENTS_STATE = "events-state.json"
VERDICTS = "verdicts.jsonl"
# The quality columns `harness grade` may rewrite; the measured columns are never touched.
VERDICT_COLUMNS = (
    "passed",
    "score",
    "grader",
    "judge_model",
    "judge_score",
    "judge_spread",
    "judge_rationale",
    "judge_error",
    "judge_cost_usd",
    "judge_input_tokens",
    "judge_output_tokens",
)
EVENTS_JOURNAL = "events-journal-{session}.jsonl"
ORIGINALS = "originals.parquet"
BATCHES = "batches.jsonl"
REPORT_FILES = ("summary.parquet", "comparison.parquet", "report.md", "report.html")

_COLUMNS = list(CALL_SCHEMA)
_ROW_GROUP = 10_000
_TS_COLUMNS = [name for name, dtype in CALL_SCHEMA.items() if isinstance(dtype, pl.Datetime)]
_CHUNK_RE = re.compile(r"^(journal|part)-([0-9A-Za-z]+)-(\d+)\.(jsonl|parquet)$")
_EVENTS_JOURNAL_RE = re.compile(r"^events-journal-([0-9A-Za-z]+)\.jsonl$")


class RunDir:
    """One run directory. `create`/`resume` open it for writing (locked, new session); `read` for reading."""

    def __init__(
        self, path: Path, manifest: dict[str, Any], *, session: str | None, lock_fd: int | None
    ) -> None:
        self.path = path
        self._manifest = manifest
        self.session = session
        self._lock_fd = lock_fd
        self._secrets = usable(env_secrets())

    # ------------------------------------------------------------ opening

    @classmethod
    def create(
        cls,
        results_dir: Path,
        run_id: str,
        manifest: Mapping[str, Any],
        *,
        secrets: Iterable[str] = (),
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> RunDir:
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
        check_room(results_dir, min_free_bytes)
        path = results_dir / run_id
        try:
            path.mkdir()
        except FileExistsError as exc:
            raise StorageError(f"run directory {path} already exists (use --resume {run_id})") from exc
        except OSError as exc:
            raise StorageError(f"cannot create run directory {path}: {exc.strerror or exc}") from exc
        try:
            (path / PARTS).mkdir()
            _probe_writable(path / PARTS)
            lock_fd = _lock(path)
        except OSError as exc:
            shutil.rmtree(path, ignore_errors=True)
            raise StorageError(f"cannot write run directory {path}: {exc.strerror or exc}") from exc
        except StorageError:
            shutil.rmtree(path, ignore_errors=True)
            raise
        run = cls(path, dict(manifest), session=_new_session(), lock_fd=lock_fd)
        run._secrets = usable([*run._secrets, *secrets])
        try:
            run.update_manifest(sessions=[*run._manifest.get("sessions", []), run.session])
        except StorageError:
            run.close()
            shutil.rmtree(path, ignore_errors=True)
            raise
        return run

    @classmethod
    def resume(
        cls,
        results_dir: Path,
        run_id: str,
        *,
        secrets: Iterable[str] = (),
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> RunDir:
        """Reopen a run for writing: crashed sessions' journals become parts, and a new session starts."""
        path = Path(results_dir) / run_id
        if not path.is_dir():
            raise StorageError(f"cannot resume: run directory {path} does not exist")
        manifest = _read_manifest(path, required=True)
        check_room(path, min_free_bytes)
        try:
            (path / PARTS).mkdir(exist_ok=True)
            _probe_writable(path / PARTS)
            lock_fd = _lock(path)
        except OSError as exc:
            raise StorageError(f"cannot write run directory {path}: {exc.strerror or exc}") from exc
        run = cls(path, manifest, session=_new_session(), lock_fd=lock_fd)
        run._secrets = usable([*run._secrets, *secrets])
        try:
            chunks = run._chunks()
            for _, _, chunk in chunks:  # crashed sessions: no process owns these journals now
                if chunk.suffix == ".jsonl":
                    journal_to_part(chunk)
            if not chunks and (path / CALLS).is_file():
                _seed_part(path)
            sessions = manifest.get("sessions")
            run.update_manifest(sessions=[*(sessions if isinstance(sessions, list) else []), run.session])
        except StorageError:
            run.close()
            raise
        return run

    @classmethod
    def for_grading(cls, path: Path) -> RunDir:
        """An existing run, locked so that no run or other grading appends while verdicts are written."""
        run = cls.read(path)
        try:
            run._lock_fd = _lock(run.path)
            _drop_torn_tail(run.path / VERDICTS)  # a killed grading's half line must not glue onto the next
        except OSError as exc:
            run.close()
            raise StorageError(f"cannot write run directory {run.path}: {exc.strerror or exc}") from exc
        return run

    @staticmethod
    def is_run_dir(path: Path) -> bool:
        """Whether `path` holds a run (its manifest, its calls or its parts)."""
        path = Path(path)
        return path.is_dir() and any((path / n).exists() for n in (MANIFEST, CALLS, PARTS))

    @classmethod
    def read(cls, path: Path) -> RunDir:
        """An existing run directory, read-only (report, compare, `events resend`, the CLI's resume)."""
        path = Path(path)
        if not cls.is_run_dir(path):
            raise StorageError(f"{path}: not a run directory (no {MANIFEST}, {CALLS} or {PARTS}/)")
        return cls(path, _read_manifest(path, required=False), session=None, lock_fd=None)

    def close(self) -> None:
        """Release the lock (a reader holds none)."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ manifest and files

    @property
    def run_id(self) -> str:
        return str(self._manifest.get("run_id") or self.path.name)

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as last written (a copy: change it with `update_manifest`)."""
        return dict(self._manifest)

    def update_manifest(self, **fields: Any) -> None:
        """Merge `fields` into the manifest and rewrite it atomically (secrets redacted)."""
        self._manifest = redact({**self._manifest, **fields}, self._secrets)
        data = orjson.dumps(self._manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC, default=str)
        self.write_atomic(MANIFEST, data + b"\n")

    def write_atomic(self, name: str, data: bytes) -> Path:
        """Write `data` as `name` via a tmp file, fsync and `os.replace`: readers see old or new, never half."""
        return atomic_write_bytes(self.path / name, data)

    def write_parquet(self, name: str, frame: pl.DataFrame) -> Path:
        buf = io.BytesIO()
        frame.write_parquet(buf)
        return self.write_atomic(name, buf.getvalue())

    def write_originals(self, frame: pl.DataFrame) -> Path:
        """Production's measurements of the dataset's cases (one row per case)."""
        return self.write_parquet(ORIGINALS, frame)

    def load_originals(self) -> pl.DataFrame | None:
        """What `write_originals` wrote, or None (a dataset not imported from production)."""
        path = self.path / ORIGINALS
        if not path.is_file():
            return None
        try:
            return pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise StorageError(f"{path}: unreadable ({exc})") from exc

    def file(self, name: str) -> Path:
        """The path of a report file (`REPORT_FILES` or a chart) for a reader such as the console."""
        return self.path / name

    def check_room(self, min_free_bytes: int) -> None:
        check_room(self.path, min_free_bytes)

    # ------------------------------------------------------------ calls: the writer's side

    def calls_journal(self, seq: int) -> Path:
        """This session's calls journal number `seq` (the store appends to it)."""
        assert self.session is not None, "a RunDir opened with read() has no session"
        return self.path / PARTS / f"journal-{self.session}-{seq:05d}.jsonl"

    def build_calls(self) -> int:
        """Write `calls.parquet` from everything stored (lazy scan, sink to tmp, os.replace); its row count."""
        final = self.path / CALLS
        tmp = self.path / f".{CALLS}.tmp-{os.getpid()}"
        try:
            parts = self._plain_parts()
            if parts:  # the common case, streamed as one scan: 200,000 rows in ~60 MB, not ~190
                pl.scan_parquet(parts).sink_parquet(tmp, row_group_size=_ROW_GROUP)
            elif (rows := self._all_rows()) is None:
                pl.DataFrame(schema=CALL_SCHEMA).write_parquet(tmp)
            else:
                _dedup(rows).sink_parquet(tmp, row_group_size=_ROW_GROUP)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except (OSError, pl.exceptions.PolarsError) as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StorageError(f"cannot write {final}: {detail}") from exc
        return int(pl.scan_parquet(final).select(pl.len()).collect().item())

    def _plain_parts(self) -> list[Path]:
        """The chunks, when all are parts in `CALL_SCHEMA` and no call_id repeats (nothing to
        dedup or conform: the rows can be copied as they are, in write order); else []."""
        chunks = [p for _, _, p in self._chunks()]
        if not chunks or any(p.suffix != ".parquet" for p in chunks):
            return []
        if any(pl.read_parquet_schema(p) != CALL_SCHEMA for p in chunks):
            return []  # a part of an older harness: read through `conform`
        ids = pl.scan_parquet(chunks).select("call_id").collect().get_column("call_id")
        return [] if ids.is_duplicated().any() else chunks

    # ------------------------------------------------------------ calls: the one reader

    def load_calls(self) -> pl.LazyFrame:
        """The run's calls, one row per call_id (the dedup rule above), in `CALL_SCHEMA`, with verdicts applied."""
        return self._with_verdicts(self._stored_calls())

    def _stored_calls(self) -> pl.LazyFrame:
        final = self.path / CALLS
        chunks = self._chunks()
        if final.is_file():
            stamp = final.stat().st_mtime_ns
            if all(p.suffix == ".parquet" and p.stat().st_mtime_ns <= stamp for _, _, p in chunks):
                try:
                    return conform(pl.scan_parquet(final))
                except (pl.exceptions.PolarsError, OSError) as exc:
                    raise StorageError(f"{final}: unreadable ({exc})") from exc
        rows = self._all_rows()
        if rows is None:
            return pl.DataFrame(schema=CALL_SCHEMA).lazy()
        return _dedup(rows)

    # ------------------------------------------------------------ verdicts (`harness grade`)

    def append_verdicts(self, lines: bytes) -> None:
        """Append whole verdict lines (one `os.write`); a kill can tear only the last one, which is ignored."""
        fd = os.open(self.path / VERDICTS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            append_all(fd, lines, self.path / VERDICTS)
        finally:
            os.close(fd)

    def verdicts(self) -> pl.DataFrame:
        """The last verdict per call_id: `call_id`, `grading` (what graded it) and `VERDICT_COLUMNS`."""
        schema = {
            "call_id": pl.String(),
            "grading": pl.String(),
            **{c: CALL_SCHEMA[c] for c in VERDICT_COLUMNS},
        }
        path = self.path / VERDICTS
        data = path.read_bytes() if path.is_file() else b""
        data = data[: data.rfind(b"\n") + 1]
        if not data.strip():
            return pl.DataFrame(schema=schema)
        frame = pl.read_ndjson(io.BytesIO(data), schema=schema)
        return frame.unique(subset="call_id", keep="last", maintain_order=True)

    def _with_verdicts(self, calls: pl.LazyFrame) -> pl.LazyFrame:
        if not (self.path / VERDICTS).is_file():
            return calls
        verdicts = self.verdicts().drop("grading").lazy()
        renamed = verdicts.rename({c: f"_v_{c}" for c in VERDICT_COLUMNS})
        joined = calls.join(renamed, on="call_id", how="left", maintain_order="left")
        graded = pl.col("_v_grader").is_not_null() | pl.col("_v_judge_error").is_not_null()
        return joined.with_columns(
            pl.when(graded).then(pl.col(f"_v_{c}")).otherwise(pl.col(c)).alias(c) for c in VERDICT_COLUMNS
        ).select(_COLUMNS)

    def finished_call_ids(self) -> set[str]:
        """call_ids that already have a finished (not cancelled) row: a resume skips exactly these."""
        rows = self._all_rows()
        if rows is None:
            return set()
        done = rows.filter(pl.col("status") != "cancelled").select("call_id").unique().collect()
        return set(done["call_id"].to_list())

    def sessions(self) -> list[str]:
        """Sessions that wrote call rows, oldest first."""
        return sorted({s for s, _, _ in self._chunks()})

    def records_of_sessions(self, sessions: set[str]) -> Iterator[CallRecord]:
        """The winning rows (the dedup rule) that the given earlier sessions wrote, cancelled included.

        The event sink rebuilds the events of crashed sessions from these, so an event always
        describes the same row as the report and the resume.
        """
        sessions = sessions - {self.session} if self.session else set(sessions)
        rows = self._all_rows()
        if rows is None or not sessions:
            return
        winners = _dedup(rows, keep=["_session"]).filter(pl.col("_session").is_in(sorted(sessions)))
        for row in winners.drop("_session").collect().iter_rows(named=True):
            yield CallRecord(**row)

    def _chunks(self) -> list[tuple[str, int, Path]]:
        """(session, seq, file) of every chunk, in write order; a part wins over its own journal (same rows)."""
        chunks: dict[tuple[str, int], Path] = {}
        parts = self.path / PARTS
        if parts.is_dir():
            for path in parts.iterdir():
                m = _CHUNK_RE.match(path.name)
                if not m:
                    continue
                key = (m.group(2), int(m.group(3)))
                if m.group(1) == "part" or key not in chunks:
                    chunks[key] = path
        return [(s, q, p) for (s, q), p in sorted(chunks.items())]

    def _all_rows(self) -> pl.LazyFrame | None:
        """Every stored row with its order keys (`_src`, `_row`): the chunks in write order.

        `calls.parquet` is derived from the chunks, so it is read only when there is
        no chunk at all (a run whose parts/ was removed; `resume` seeds a part from it).
        """
        chunks = [(s, p) for s, _, p in self._chunks()]
        if not chunks and (self.path / CALLS).is_file():
            chunks = [("", self.path / CALLS)]
        if not chunks:
            return None
        frames = [
            _frame_of(p).with_columns(
                pl.lit(i, dtype=pl.Int64()).alias("_src"),
                pl.int_range(pl.len(), dtype=pl.Int64()).alias("_row"),
                pl.lit(session, dtype=pl.String()).alias("_session"),
            )
            for i, (session, p) in enumerate(chunks)
        ]
        return pl.concat(frames, how="vertical")

    # ------------------------------------------------------------ the batches journal

    def append_batch_entry(self, entry: Mapping[str, Any]) -> None:
        """Append one JSON line to `batches.jsonl` and fsync it before returning (the file's
        directory too when this created it): what a batch engine journals must outlive any crash."""
        assert self.session is not None, "a RunDir opened with read() has no session"
        path = self.path / BATCHES
        line = orjson.dumps(redact(dict(entry), self._secrets), option=orjson.OPT_APPEND_NEWLINE)
        created = not path.exists()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.path)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def batch_entries(self) -> list[dict[str, Any]]:
        """Every line of `batches.jsonl` in order ([] without one); a torn last line is ignored."""
        try:
            data = (self.path / BATCHES).read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot read {self.path / BATCHES}: {exc.strerror or exc}") from exc
        entries = []
        for line in data.splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the line a kill cut short (only the last one can be)
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    # ------------------------------------------------------------ events

    def events_journal(self, session: str | None = None) -> Path:
        """The events journal of `session` (default: this one)."""
        session = session or self.session
        assert session is not None, "a RunDir opened with read() has no session"
        return self.path / EVENTS_JOURNAL.format(session=session)

    def events_journal_sessions(self) -> set[str]:
        """Sessions that left an events journal."""
        found = set()
        for path in self.path.glob(EVENTS_JOURNAL.format(session="*")):
            m = _EVENTS_JOURNAL_RE.match(path.name)
            if m:
                found.add(m.group(1))
        return found

    @property
    def events_outbox(self) -> Path:
        return self.path / EVENTS_OUTBOX

    def confirmed_event_sessions(self) -> set[str]:
        """Sessions whose events a clean close accounted for (delivered or outboxed)."""
        try:
            state = orjson.loads((self.path / EVENTS_STATE).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return set()
        confirmed = state.get("confirmed_sessions") if isinstance(state, dict) else None
        return {s for s in confirmed or () if isinstance(s, str)}

    def confirm_event_sessions(self, sessions: Iterable[str]) -> None:
        confirmed = sorted(self.confirmed_event_sessions() | set(sessions))
        state = {"confirmed_sessions": confirmed}
        self.write_atomic(EVENTS_STATE, orjson.dumps(state, option=orjson.OPT_INDENT_2) + b"\n")


# ---------------------------------------------------------------- file primitives


def atomic_write_bytes(path: Path, data: bytes) -> Path:
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
    return path


def append_all(fd: int, data: bytes, path: Path) -> None:
    """One `os.write` per call in practice; loops only on a short write."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _drop_torn_tail(path: Path) -> None:
    """Cut a file of whole lines back to its last newline (what a kill in mid-append leaves)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _fsync_dir(directory: Path) -> None:
    """Make a new file's name durable (its directory entry), where the platform allows."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_room(directory: Path, min_free_bytes: int) -> None:
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


def _lock(path: Path) -> int:
    """An exclusive flock on `<run>/.lock`: two processes must never append to one run (kill -9 releases it)."""
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StorageError(f"run directory {path} is in use by another harness process") from exc
        raise
    return fd


def _new_session() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + _random.token_hex(2)


def _read_manifest(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        manifest = orjson.loads((path / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        if required:
            raise StorageError(f"cannot resume: {path / MANIFEST} is missing or unreadable") from exc
        return {}
    if not isinstance(manifest, dict):
        if required:
            raise StorageError(f"cannot resume: {path / MANIFEST} is not a JSON object")
        return {}
    return manifest


# ---------------------------------------------------------------- the calls format


def conform(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Cast to `CALL_SCHEMA`, adding absent columns as nulls (a run written by an older harness)."""
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


def read_journal(path: Path) -> pl.DataFrame:
    """Rows of one calls journal with CALL_SCHEMA dtypes; a torn last line (a kill mid-write) is ignored."""
    data = path.read_bytes()
    end = data.rfind(b"\n")
    data = data[: end + 1] if end >= 0 else b""
    if not data.strip():
        return pl.DataFrame(schema=CALL_SCHEMA)
    try:
        return pl.read_ndjson(io.BytesIO(data), schema=CALL_SCHEMA)
    except (pl.exceptions.PolarsError, ValueError):
        # A damaged line inside the file (cannot happen with whole-line appends): keep the good ones.
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


def journal_to_part(journal: Path) -> None:
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


def warm_up() -> None:
    """Load polars' JSON reader and parquet writer (a store does it before the first call, not mid-run)."""
    pl.read_ndjson(io.BytesIO(b"{}\n"), schema=CALL_SCHEMA).head(0).write_parquet(io.BytesIO())


def _part_of(journal: Path) -> Path:
    return journal.with_name(journal.name.replace("journal-", "part-", 1).replace(".jsonl", ".parquet"))


def _frame_of(path: Path) -> pl.LazyFrame:
    if path.suffix == ".parquet":
        return conform(pl.scan_parquet(path))
    try:
        return read_journal(path).lazy()
    except FileNotFoundError:  # a live run turned it into a part since the directory was listed
        return conform(pl.scan_parquet(_part_of(path)))


def _dedup(rows: pl.LazyFrame, keep: list[str] | None = None) -> pl.LazyFrame:
    """One row per call_id: finished beats cancelled, then the later row wins; kept in write order.

    Duplicates are rare (cancelled then re-run, a part next to its journal), so only
    the key columns are collected; the full rows stream through an anti-join that
    drops the losers, instead of sorting the whole table in memory.
    """
    columns = [*_COLUMNS, *(keep or ())]
    keys = rows.select("call_id", "status", "_src", "_row").collect()
    dups = keys.filter(pl.col("call_id").is_duplicated())
    if dups.height == 0:
        return rows.select(columns)
    losers = (
        dups.with_columns((pl.col("status") != "cancelled").alias("_fin"))
        .sort(["_fin", "_src", "_row"])
        .filter(pl.int_range(pl.len()).over("call_id") < pl.len().over("call_id") - 1)
        .select("_src", "_row")
    )
    return rows.join(losers.lazy(), on=["_src", "_row"], how="anti", maintain_order="left").select(columns)


def _seed_part(path: Path) -> None:
    """parts/ was removed: the finished table becomes the first chunk, so new rows add to it."""
    seed = path / PARTS / "part-0-00000.parquet"
    try:
        shutil.copyfile(path / CALLS, seed)
    except OSError as exc:
        raise StorageError(f"cannot write {seed}: {exc.strerror or exc}") from exc
