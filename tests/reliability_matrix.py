"""Shared parts of the reliability matrix: the case registry, planted secrets, datasets, ground-truth checks, and the doc.

`CASES` is the one list of reliability cases and what each asserts. Every test of
the matrix ends with `record(case, ...)` giving what it measured: by default that
checks `docs/reliability.md` lists the case with the same assertion text (so the
doc cannot drift from the tests); with `RELIABILITY_UPDATE_DOC=1` in the
environment it rewrites the case's row with the measured figures instead.
`test_reliability_faults.py::test_doc_lists_exactly_the_registered_cases` checks
the other direction (no case in the doc without a test).

The secret checks (`assert_no_secrets`) grep files, parquet string columns,
captured events, logs and process output for the planted keys.

This module must not start runs of its own or hold assertions that belong to one
case; it never prints a planted key.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from harness import procs
from harness.secrets import ANTHROPIC_KEY_ENV, POSTHOG_KEY_ENV

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
TABLE_END = "<!-- end of matrix -->"
MODELS = "claude-haiku-4-5,claude-sonnet-4-6"

# Planted for the whole session: random, so a hit can only come from a leak.
PLANTED_ANTHROPIC_KEY = "sk-ant-api03-" + secrets.token_urlsafe(48)
PLANTED_POSTHOG_KEY = "phc_" + secrets.token_urlsafe(32)
PLANTED = (PLANTED_ANTHROPIC_KEY, PLANTED_POSTHOG_KEY)

CASES: dict[str, str] = {
    "fault-429": "429 + retry-after: no retry before retry-after; attempts = requests; final kind rate_limit/429",
    "fault-529": "529: retried; attempts = requests; final kind overloaded/529",
    "fault-500": "500: retried; attempts = requests; final kind server_error/500",
    "fault-midstream-error": "overloaded_error event after the 200: retried like a 529; attempts = requests; final kind overloaded/200",
    "fault-drop": "connection cut mid-stream: stream_dropped/200, never ok",
    "fault-truncate": "stream ends without message_stop: stream_truncated/200, never ok",
    "fault-slow-first-byte": "first byte later than --timeout: timeout/no status, retried",
    "fault-outage-10s": "port refuses connections for 10 s mid-run: retried through it; refused attempts never reach the server",
    "fault-mix-10pct": "all seven faults at 10% in total: each row's kind/status = its last attempt's fault",
    "crash-kill9": "kill -9 at 20+ seeded points, --resume until done: every call once, none lost, none re-sent",
    "crash-sigint": "SIGINT: in-flight calls finish, exit 130, flushed, resume completes",
    "crash-sigterm": "SIGTERM with a short grace: in-flight calls cancelled, exit 143, resume re-runs only them",
    "storage-unwritable": "results dir unwritable: exit 2 naming the path before any call, nothing written",
    "storage-full-at-start": "too little free space: exit 2 naming the path before any call",
    "storage-full-mid-run": "ENOSPC mid-run: exit 2, scheduling stops, every row written is kept, manifest failed",
    "posthog-outage": "capture 500 30 s, refused 30 s, then gone: numbers unaffected, outbox, resend = one event per call",
    "secrets-planted-keys": "planted sk-ant- and PostHog keys never in results, events, logs, errors, progress",
    "privacy-no-capture": "--no-prompt-capture: no prompt/response in events; --no-store-text: no response in parquet",
    "simulator-loopback": "the simulator listens on 127.0.0.1 only (default and tests)",
    "budget-max-cost": "--max-cost, concurrency 64: spent <= budget, budget_stopped, every sent call is a row",
    "crash-batch-kill9": "batch mode, kill -9 at a dozen steps, --resume until done: every call once, no call in two batches",
    "crash-batch-sigint": "batch mode, SIGINT while waiting: exit 130, batch runs on, resume command printed, resume collects it",
    "crash-batch-sigterm": "batch mode, SIGTERM while waiting: exit 143, batch runs on, resume command printed, resume collects it",
}

# What the final attempt's simulator fault must become in the row: (error_kind, http_status).
FAULT_OUTCOME: dict[str | None, tuple[str | None, int | None]] = {
    None: (None, 200),
    "rate_limit": ("rate_limit", 429),
    "overloaded": ("overloaded", 529),
    "api_error": ("server_error", 500),
    "midstream_error": ("overloaded", 200),  # its overloaded_error event: the 529's kind
    "drop": ("stream_dropped", 200),
    "truncate": ("stream_truncated", 200),
    "slow_first_byte": ("timeout", None),
}
RETRYABLE_FAULTS = {"rate_limit", "overloaded", "api_error", "slow_first_byte", "midstream_error"}


# ---------------------------------------------------------------- datasets


def write_dataset(path: Path, n: int, *, max_tokens: int = 12) -> Path:
    """`n` small cases; prompts carry a marker so privacy checks can look for them."""
    with path.open("w") as fh:
        for i in range(n):
            row = {
                "id": f"c{i:03d}",
                "prompt": f"PROMPTMARK{i:03d}: what is {i} plus {i}?",
                "max_tokens": max_tokens,
                "user_id": f"user{i % 5}",
            }
            fh.write(json.dumps(row) + "\n")
    return path


# ---------------------------------------------------------------- ground truth


def truth_by_call(requests: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Ground-truth records per call_id, in order of receipt."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in requests:
        if r.get("call_id"):
            out[r["call_id"]].append(dict(r))
    for records in out.values():
        records.sort(key=lambda r: r["received_unix"])
    return out


def expected_outcome(record: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """The (error_kind, http_status) a row must carry when `record` is its last attempt."""
    fault = record.get("fault")
    if fault is None and record.get("status") == 429:  # the simulator's own rate limit
        return ("rate_limit", 429)
    return FAULT_OUTCOME[fault]


def check_plan_complete(calls: pl.DataFrame, planned: int, cases: int, models: int, repeats: int) -> None:
    """Every planned call is exactly one row: count, unique ids, and the full case × model × repeat grid."""
    assert calls.height == planned, (calls.height, planned)
    assert calls["call_id"].n_unique() == planned
    grid = calls.select("case_id", "model", "repeat").unique()
    assert grid.height == planned == cases * models * repeats
    assert calls["case_id"].n_unique() == cases
    assert calls["model"].n_unique() == models
    assert calls["repeat"].n_unique() == repeats


def check_rows_against_truth(
    calls: pl.DataFrame, truth: Mapping[str, list[dict[str, Any]]], *, refused_ok: bool = False
) -> dict[str, int]:
    """Each row agrees with what the simulator saw of its call; returns counts for the report.

    - attempts == requests received for the call (with `refused_ok`, attempts refused
      at the socket never reach the simulator: attempts >= requests);
    - the attempt numbers received are distinct (no attempt sent twice);
    - an `ok` row's last attempt had no fault, and its usage and stop reason are the server's;
    - an `error` row's kind and HTTP status are its last attempt's fault's;
    - every attempt before the last had a retryable fault, and a 429's successor was
      received no sooner than its `retry-after`.
    """
    counts: Counter[str] = Counter()
    for row in calls.iter_rows(named=True):
        records = truth.get(row["call_id"], [])
        attempts = row["attempts"]
        numbers = [r["attempt"] for r in records]
        assert len(numbers) == len(set(numbers)), ("an attempt was sent twice", row["call_id"], numbers)
        if refused_ok:
            assert attempts >= len(records), (row["call_id"], attempts, len(records))
        else:
            assert attempts == len(records), ("attempts != requests", row["call_id"], attempts, len(records))
        counts["requests"] += len(records)
        if attempts > 1:
            counts["retried"] += 1
            assert row["retry_wait_s"] > 0, row["call_id"]
        for before, after in itertools.pairwise(records):
            # (In an outage, an attempt cut before its response is a retryable connection error.)
            assert (
                before.get("fault") in RETRYABLE_FAULTS
                or before["status"] in (429, 500, 529)
                or (refused_ok and before.get("fault") is None)
            ), ("a non-retryable attempt was retried", row["call_id"], before)
            if before.get("fault") == "midstream_error":
                counts["retried_after_midstream_error"] += 1
            if before.get("retry_after") is not None:
                gap = after["received_unix"] - before["received_unix"]
                assert gap >= before["retry_after"], ("retried before retry-after", row["call_id"], gap)
                counts["retry_after_checked"] += 1
        last_reached = bool(records) and records[-1]["attempt"] == attempts - 1
        if row["status"] == "ok":
            assert last_reached, ("an ok row whose last attempt the server never saw", row["call_id"])
            last = records[-1]
            assert last.get("fault") in (None, "slow_first_byte") and last["status"] == 200, (row, last)
            assert row["request_id"] == last["request_id"]
            assert row["output_tokens"] == last["output_tokens"]
            assert row["input_tokens"] == last["input_tokens"]
            assert row["stop_reason"] == last["stop_reason"] is not None
            counts["ok"] += 1
            continue
        assert row["status"] == "error", row
        counts[f"error:{row['error_kind']}"] += 1
        if not last_reached:
            assert refused_ok and row["error_kind"] == "connection", row
            assert row["http_status"] is None
            continue
        last = records[-1]
        if refused_ok and last.get("fault") is None and last["status"] == 200:
            # Cut by the outage after its 200: a dropped stream or a lost response, never ok.
            assert row["error_kind"] in ("stream_dropped", "connection", "timeout"), (row, last)
            continue
        kind, status = expected_outcome(last)
        assert (row["error_kind"], row["http_status"]) == (kind, status), (row, last)
        if kind in ("stream_error", "stream_dropped", "stream_truncated"):
            assert row["stop_reason"] is None
    return dict(counts)


def errors_by_kind(calls: pl.DataFrame) -> dict[str, int]:
    errs = calls.filter(pl.col("status") != "ok").group_by("error_kind").len()
    return {str(k): int(v) for k, v in sorted(errs.iter_rows())}


# ---------------------------------------------------------------- secrets


def _parquet_strings(path: Path) -> str:
    frame = pl.read_parquet(path)
    parts = [frame.schema.names().__repr__()]
    for name, dtype in frame.schema.items():
        if dtype == pl.String:
            parts.extend(v for v in frame[name].drop_nulls().to_list())
        elif isinstance(dtype, pl.List):
            parts.extend(str(v) for v in frame[name].drop_nulls().to_list())
    return "\n".join(parts)


def files_text(root: Path) -> Iterable[tuple[str, str]]:
    """(path, text) of every file under `root`; parquet files are read (they are compressed on disk)."""
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        raw = path.read_bytes()
        yield str(path), raw.decode("utf-8", errors="replace")
        if path.suffix == ".parquet":
            yield f"{path} (decoded)", _parquet_strings(path)


def assert_no_secrets(*, dirs: Iterable[Path] = (), texts: Mapping[str, str] | None = None) -> int:
    """No planted key in any file under `dirs` or in any of `texts`; returns how many sources were checked."""
    checked = 0
    sources: list[tuple[str, str]] = list((texts or {}).items())
    for d in dirs:
        sources.extend(files_text(d))
    for where, text in sources:
        checked += 1
        for key in PLANTED:
            # Also a prefix: a truncated key in a message would still be a leak.
            assert key[:24] not in text, f"a planted key leaked into {where}"
    return checked


def planted_env(**extra: str) -> dict[str, str]:
    """The environment of a harness subprocess: the planted keys plus `extra`."""
    env = procs.environment(
        {ANTHROPIC_KEY_ENV: PLANTED_ANTHROPIC_KEY, POSTHOG_KEY_ENV: PLANTED_POSTHOG_KEY, **extra}
    )
    env.setdefault("COLUMNS", "200")
    return env


# ---------------------------------------------------------------- harness subprocesses


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def read_logs(log_dir: Path) -> dict[str, str]:
    """Every log file in `log_dir` by path (stdout and stderr of each harness process)."""
    return {str(p): p.read_text(errors="replace") for p in sorted(log_dir.glob("*.*"))}


# A fork server for tests that start the harness many times: it pays the third-party
# imports (~2.5 s, mostly the SDK's types) once, while still single-threaded, then
# forks one child per run. Each child is a whole `harness` process: it imports the
# harness itself after the fork, runs `harness.cli.main()` with the given argv and
# environment, and can be killed like any other process.
_FORK_SERVER = r"""
import atexit, json, os, sys, threading, traceback
import aiohttp, anthropic, httpx2, orjson, posthog, rich.console, typer
if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
    print(json.dumps({"error": "threads before fork"}), flush=True)
    sys.exit(1)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "spawn":
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for fd, name, flags in ((1, "out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), (2, "err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), (0, None, os.O_RDONLY)):
                    new = os.open(cmd[name] if name else os.devnull, flags, 0o644)
                    os.dup2(new, fd)
                    os.close(new)
                os.environ.clear()
                os.environ.update(cmd["env"])
                os.chdir(cmd["cwd"])
                sys.argv = ["harness", *cmd["argv"]]
                from harness.cli import main
                try:
                    main()
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                traceback.print_exc()
            finally:
                try:
                    atexit._run_exitfuncs()
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        reply = {"pid": pid}
    else:
        done, status = os.waitpid(cmd["pid"], 0 if cmd["block"] else os.WNOHANG)
        reply = {"code": os.waitstatus_to_exitcode(status) if done else None}
    print(json.dumps(reply), flush=True)
"""


class ForkServer:
    """Start `harness` runs as forked children of a pre-imported server (see `_FORK_SERVER`)."""

    def __init__(self) -> None:
        env = procs.environment()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _FORK_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        assert json.loads(self._line()) == {"ready": True}

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return line.decode()

    def _ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        return json.loads(self._line())

    def spawn(self, args: list[str], env: Mapping[str, str], log_dir: Path, tag: str) -> int:
        log_dir.mkdir(parents=True, exist_ok=True)
        return int(
            self._ask(
                {
                    "op": "spawn",
                    "argv": args,
                    "env": dict(env),
                    "cwd": str(ROOT),
                    "out": str(log_dir / f"{tag}.out"),
                    "err": str(log_dir / f"{tag}.err"),
                }
            )["pid"]
        )

    def poll(self, pid: int) -> int | None:
        return self._ask({"op": "wait", "pid": pid, "block": False})["code"]

    def wait(self, pid: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.poll(pid)) is None:
            assert time.monotonic() < deadline, f"harness process {pid} did not end in {timeout} s"
            time.sleep(0.05)
        return code

    def kill(self, pid: int) -> int:
        os.kill(pid, signal.SIGKILL)
        return self._ask({"op": "wait", "pid": pid, "block": True})["code"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# ---------------------------------------------------------------- the doc


def _fmt_errors(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"


def row_line(
    case: str,
    *,
    calls: int | str,
    rows: int | str,
    errors: Mapping[str, int] | str,
    events: str,
    seconds: float,
    note: str = "",
) -> str:
    errs = errors if isinstance(errors, str) else _fmt_errors(errors)
    cells = [f"`{case}`", CASES[case], str(calls), str(rows), errs, events, f"{seconds:.1f}", note]
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def observed(calls: pl.DataFrame, events: Mapping[str, Any]) -> dict[str, Any]:
    """The rows, errors and events cells of a run's matrix line, from its rows and the capture endpoint."""
    return {
        "rows": calls.height,
        "errors": errors_by_kind(calls),
        "events": f"{events['unique']} unique, {events['duplicates']} dup",
    }


def doc_rows() -> dict[str, str]:
    """case id → its table line in docs/reliability.md."""
    found = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| `([a-z0-9-]+)` \|", line)
        if m:
            found[m.group(1)] = line
    return found


def record(case: str, **cells: Any) -> None:
    """Check (or, with RELIABILITY_UPDATE_DOC=1, write) the case's row in docs/reliability.md."""
    assert case in CASES, f"unregistered case {case}"
    line = row_line(case, **cells)
    rows_now = doc_rows()
    if os.environ.get("RELIABILITY_UPDATE_DOC") == "1":
        text = DOC.read_text()
        if case in rows_now:
            text = text.replace(rows_now[case], line)
        else:
            text = text.replace(TABLE_END, line + "\n" + TABLE_END)
        DOC.write_text(text)
        return
    assert case in rows_now, (
        f"docs/reliability.md does not list case {case} (run with RELIABILITY_UPDATE_DOC=1)"
    )
    prefix = f"| `{case}` | {CASES[case]} |"
    assert rows_now[case].startswith(prefix), (
        f"docs/reliability.md's row for {case} asserts something else than the test; "
        "rerun with RELIABILITY_UPDATE_DOC=1"
    )


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started
