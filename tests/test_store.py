"""The results store: crash safety (a real SIGKILL), resume, dedup, schema, storage errors, secrets."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import polars as pl
import psutil
import pytest

from harness import rundir as rundir_mod
from harness import store as store_mod
from harness.errors import StorageError
from harness.records import CALL_SCHEMA
from harness.rundir import RunDir, read_journal
from harness.secrets import redact
from harness.store import RunStore
from tests.helpers import make_record


def load_calls(run_dir: Path) -> pl.DataFrame:
    """What every reader of a run directory sees (the report, a resume, events resend)."""
    return RunDir.read(run_dir).load_calls().collect()


ROOT = Path(__file__).resolve().parent.parent


def _files(run_dir: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in (run_dir / "parts").glob(pattern))


def test_create_layout_manifest_and_refusal(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path / "results", "run-a", {"dataset": "d.jsonl", "models": ["m"]})
    run_dir = tmp_path / "results" / "run-a"
    assert store.run_dir == run_dir
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert manifest["dataset"] == "d.jsonl"
    assert manifest["sessions"] == [store.session]
    store.run.update_manifest(finished=3, stopped_by=None)
    assert orjson.loads((run_dir / "manifest.json").read_bytes())["finished"] == 3
    assert store.run.manifest["finished"] == 3
    assert not list(run_dir.glob(".*tmp*")), "atomic writes leave no tmp file"
    with pytest.raises(StorageError, match="already exists"):
        RunStore.create(tmp_path / "results", "run-a", {})
    store.close()


def test_rows_schema_dedup_and_parts(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run-b", {}, chunk_rows=7)
    records = [make_record(i, run_id="run-b") for i in range(30)]
    for record in records[:10]:
        store.write(make_record(int(record.call_id[-6:]), run_id="run-b", status="cancelled"))
    for record in records:
        store.write(record)
    store.write(make_record(3, run_id="run-b", status="cancelled"))  # a later cancelled row must not win
    store.close()
    assert store.rows_written == 41

    run_dir = tmp_path / "run-b"
    assert _files(run_dir, "journal-*") == []
    assert len(_files(run_dir, "part-*")) == 6  # 41 rows in chunks of 7; parts are kept
    final = pl.read_parquet(run_dir / "calls.parquet")
    assert final.schema == pl.Schema(CALL_SCHEMA)
    assert list(final.columns) == list(CALL_SCHEMA)
    assert final.height == 30 and final["call_id"].n_unique() == 30
    assert set(final["status"]) == {"ok"}
    by_id = {row["call_id"]: row for row in final.iter_rows(named=True)}
    for record in records:
        row = by_id[record.call_id]
        for column in CALL_SCHEMA:
            assert row[column] == getattr(record, column), column
    assert load_calls(run_dir).equals(final)


def test_cancelled_row_is_not_finished_and_is_replaced_on_resume(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run-c", {}, chunk_rows=4)
    for i in range(10):
        store.write(make_record(i, run_id="run-c", status="cancelled" if i in (2, 5) else "ok"))
    store.close()
    resumed = RunStore.resume(tmp_path, "run-c", chunk_rows=4)
    finished = resumed.run.finished_call_ids()
    assert finished == {f"call-{i:06d}" for i in range(10) if i not in (2, 5)}
    assert resumed.session != store.session
    resumed.write(make_record(2, run_id="run-c"))
    resumed.write(make_record(5, run_id="run-c", status="cancelled"))  # cancelled again: still one row
    resumed.close()
    final = load_calls(tmp_path / "run-c")
    assert final.height == 10
    status = dict(zip(final["call_id"], final["status"], strict=True))
    assert status["call-000002"] == "ok" and status["call-000005"] == "cancelled"
    manifest = orjson.loads((tmp_path / "run-c" / "manifest.json").read_bytes())
    assert manifest["sessions"] == [store.session, resumed.session]


def test_resume_without_parts_keeps_the_finished_table(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run-p", {}, chunk_rows=3)
    for i in range(5):
        store.write(make_record(i, run_id="run-p"))
    store.close()
    shutil.rmtree(tmp_path / "run-p" / "parts")
    assert load_calls(tmp_path / "run-p").height == 5
    resumed = RunStore.resume(tmp_path, "run-p")
    assert len(resumed.run.finished_call_ids()) == 5
    resumed.write(make_record(5, run_id="run-p"))
    resumed.close()
    assert sorted(load_calls(tmp_path / "run-p")["call_id"]) == [f"call-{i:06d}" for i in range(6)]


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from harness.store import RunStore
    from tests.helpers import make_record
    store = RunStore.create(Path(sys.argv[1]), "run-k", {"child": True}, chunk_rows=50, secrets=[])
    for i in range(int(sys.argv[2])):
        store.write(make_record(i, run_id="run-k"))
        print(i, flush=True)
    sys.stdin.read()  # wait to be killed
    """
)


def test_kill9_loses_no_written_call_and_resume_completes(tmp_path: Path) -> None:
    total = 400
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), str(total), str(ROOT)],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        cwd=ROOT,
    )
    assert child.stdout is not None
    confirmed = -1
    for line in child.stdout:
        confirmed = int(line)
        if confirmed >= 237:  # mid-way, between two part boundaries
            break
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    assert child.stdin is not None
    child.stdin.close()
    assert child.returncode == -signal.SIGKILL

    run_dir = tmp_path / "run-k"
    journals = list((run_dir / "parts").glob("journal-*.jsonl"))
    assert journals, "the killed session left its open journal"
    with open(sorted(journals)[-1], "ab") as fh:  # what a kill in the middle of a write leaves
        fh.write(b'{"run_id":"run-k","call_id":"call-torn","status":"o')
    rows = load_calls(run_dir)
    ids = set(rows["call_id"])
    assert {f"call-{i:06d}" for i in range(confirmed + 1)} <= ids
    assert "call-torn" not in ids
    assert rows["call_id"].n_unique() == rows.height

    resumed = RunStore.resume(tmp_path, "run-k", chunk_rows=50)
    done = resumed.run.finished_call_ids()
    assert done == ids
    assert _files(run_dir, "journal-*") == [f"journal-{resumed.session}-00000.jsonl"], (
        "old journals became parts"
    )
    for i in range(total):
        if f"call-{i:06d}" not in done:
            resumed.write(make_record(i, run_id="run-k"))
    resumed.close()
    final = pl.read_parquet(run_dir / "calls.parquet")
    assert final.height == total and final["call_id"].n_unique() == total
    assert final.schema == pl.Schema(CALL_SCHEMA)
    assert len(resumed.run.sessions()) == 2


def test_torn_journal_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "journal-x-00000.jsonl"
    good = orjson.dumps(
        {c: getattr(make_record(1), c) for c in CALL_SCHEMA}, option=orjson.OPT_APPEND_NEWLINE
    )
    path.write_bytes(good * 3 + good[:-20])
    frame = read_journal(path)
    assert frame.height == 3 and frame.schema == pl.Schema(CALL_SCHEMA)


def test_unusable_results_directory_fails_before_any_call(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="a-file"):
        RunStore.create(blocker / "results", "run-x", {})
    with pytest.raises(StorageError, match="does not exist"):
        RunStore.resume(tmp_path, "no-such-run")
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "manifest.json").write_text("{not json")
    with pytest.raises(StorageError, match=r"manifest\.json"):
        RunStore.resume(tmp_path, "garbled")


def test_full_disk_before_and_during_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_usage = rundir_mod.shutil.disk_usage
    monkeypatch.setattr(rundir_mod.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=3 * 2**20))
    with pytest.raises(StorageError, match=r"not enough free disk space in .*3 MB free"):
        RunStore.create(tmp_path, "run-full", {})
    assert not (tmp_path / "run-full").exists()
    monkeypatch.setattr(rundir_mod.shutil, "disk_usage", real_usage)

    store = RunStore.create(tmp_path, "run-full", {})
    store.write(make_record(0))
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_mod.os, "write", full)
    with pytest.raises(StorageError, match=r"journal-.*No space left on device"):
        store.write(make_record(1))
    monkeypatch.setattr(store_mod.os, "write", real_write)
    store.close()
    assert load_calls(tmp_path / "run-full")["call_id"].to_list() == ["call-000000"]


def test_real_enospc_from_dev_full_is_a_storage_error() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(StorageError, match="No space left"):
            rundir_mod.append_all(fd, b"x" * 100, Path("/dev/full"))
    finally:
        os.close(fd)


def test_second_process_cannot_open_a_live_run(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run-l", {})
    with pytest.raises(StorageError, match="in use"):
        RunStore.resume(tmp_path, "run-l")
    store.close()
    RunStore.resume(tmp_path, "run-l").close()


def test_planted_key_never_reaches_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = "sk-ant-api03-" + os.urandom(12).hex()
    monkeypatch.setenv("ANTHROPIC_API_KEY", planted)
    manifest = {"config": {"base_url": f"http://x/?key={planted}", "headers": [planted]}, "note": "ok"}
    store = RunStore.create(tmp_path, "run-s", manifest, chunk_rows=3)
    for i in range(5):
        store.write(make_record(i, status="error", error_message=f"401 invalid x-api-key {planted}"))
    store.run.update_manifest(extra={"echo": planted})
    store.close()
    final = load_calls(tmp_path / "run-s")
    for column in final.columns:
        values = final[column].cast(pl.String, strict=False).to_list() if column != "tags" else []
        assert not any(planted in str(v) for v in values), column
    assert final["error_message"][0] == "401 invalid x-api-key [secure]"
    for path in (tmp_path / "run-s").rglob("*"):
        if path.is_file():
            assert planted.encode() not in path.read_bytes(), path.name
    assert redact({"a": [planted, ("x", planted)]}, [planted]) == {"a": ["[secure]", ["x", "[secure]"]]}


def test_memory_stays_flat_over_many_records(tmp_path: Path) -> None:
    proc = psutil.Process()
    store = RunStore.create(tmp_path, "run-m", {}, chunk_rows=2000)
    records = [make_record(i, run_id="run-m") for i in range(500)]
    for i in range(6000):
        store.write(records[i % 500])
    store._pool.submit(lambda: None).result()
    base = proc.memory_info().rss
    for i in range(30000):
        store.write(records[i % 500])
    store._pool.submit(lambda: None).result()
    grown = proc.memory_info().rss - base
    store.close()
    print(f"RSS growth {grown / 2**20:.1f} MB")
    assert grown < 40 * 2**20, f"RSS grew {grown / 2**20:.1f} MB over 30,000 records"


def test_benchmark_store_write(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = RunStore.create(tmp_path, "run-bench", {}, chunk_rows=2000)
    records = [make_record(i, run_id="run-bench") for i in range(100)]
    state = {"i": 0}

    def one() -> None:
        store.write(records[state["i"] % 100])
        state["i"] += 1

    benchmark(one)
    store.close()
    assert store.rows_written == state["i"] >= 1
