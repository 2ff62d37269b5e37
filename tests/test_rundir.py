"""The run directory's one owner: every reader (report, --resume, event recovery) sees the same winning rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import StorageError
from harness.events.sink import EventSink
from harness.report import write_report
from harness.rundir import RunDir
from harness.store import RunStore
from tests.helpers import event_settings, make_case, make_record
from tests.simproc import SimProc


def crash(store: RunStore) -> None:
    """What a `kill -9` leaves: the journal as written (no part, no calls.parquet), the lock released."""
    store._close_journal(convert=False)
    store._pool.shutdown(wait=True)
    store.run.close()


def damaged_run(tmp_path: Path) -> tuple[Path, dict[str, tuple[str, int]]]:
    """Two crashed sessions with a duplicate, a cancelled-then-finished call and a torn line.

    Returns the run directory and, per call_id, the winning row's (status, attempts).
    """
    first = RunStore.create(tmp_path, "run-t", {"run_id": "run-t"})
    first.write(make_record(1, attempts=1))
    first.write(make_record(2, status="cancelled"))
    first.write(make_record(3, attempts=1))
    first.write(make_record(3, attempts=3))  # the same call finished twice: the later row wins
    first.write(make_record(5, attempts=2))
    crash(first)
    journal = next((tmp_path / "run-t" / "parts").glob("journal-*.jsonl"))
    with open(journal, "ab") as fh:
        fh.write(b'{"run_id":"run-t","call_id":"call-000009","status":"o')  # torn by the kill
    second = RunStore.resume(tmp_path, "run-t")
    second.write(make_record(2, attempts=2))  # cancelled, then finished: the finished row wins
    second.write(make_record(4, status="cancelled"))
    second.write(make_record(5, status="cancelled"))  # a later cancelled row never beats a finished one
    crash(second)
    winners = {
        make_record(1).call_id: ("ok", 1),
        make_record(2).call_id: ("ok", 2),
        make_record(3).call_id: ("ok", 3),
        make_record(4).call_id: ("cancelled", 1 + 4 % 3),
        make_record(5).call_id: ("ok", 2),
    }
    return tmp_path / "run-t", winners


def test_report_resume_and_event_recovery_agree_on_the_winning_rows(
    simulator: SimProc, tmp_path: Path
) -> None:
    run_dir, winners = damaged_run(tmp_path)
    finished = {call_id for call_id, (status, _) in winners.items() if status != "cancelled"}

    # The report's rows.
    calls = RunDir.read(run_dir).load_calls().collect()
    assert (
        dict(zip(calls["call_id"], zip(calls["status"], calls["attempts"], strict=True), strict=True))
        == winners
    )
    assert "call-000009" not in set(calls["call_id"]), "a torn line is never a row"
    report = write_report(run_dir)
    assert report.summary["calls"].sum() == len(winners)

    # What a resume skips, and the events it rebuilds for the crashed sessions.
    resumed = RunDir.resume(tmp_path, "run-t")
    try:
        assert resumed.finished_call_ids() == finished
        cases = {make_case(i).id: make_case(i) for i in range(1, 6)}
        sink = EventSink(event_settings(simulator.url), resumed, cases)
        assert sink.recover() == len(finished), "one event per finished call, none for cancelled ones"
        sink.close()
    finally:
        resumed.close()
    events = {e["properties"]["call_id"]: e["properties"] for e in simulator.events()["events"]}
    assert set(events) == finished
    for call_id in finished:
        assert (events[call_id]["status"], events[call_id]["attempts"]) == winners[call_id], call_id


def test_calls_parquet_is_read_only_while_it_is_current(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run-c", {"run_id": "run-c"}, chunk_rows=3)
    for i in range(7):
        store.write(make_record(i, run_id="run-c"))
    store.close()
    run = RunDir.read(tmp_path / "run-c")
    assert run.load_calls().collect().height == 7
    (tmp_path / "run-c" / "calls.parquet").write_bytes(b"not parquet")  # damaged after the run
    with RunDir.resume(tmp_path, "run-c") as again:  # a resume reads the parts, the source of truth
        assert again.finished_call_ids() == {make_record(i, run_id="run-c").call_id for i in range(7)}
    with pytest.raises(StorageError, match="unreadable"):
        RunDir.read(tmp_path / "run-c").load_calls().collect()


def test_read_refuses_what_is_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a run directory"):
        RunDir.read(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError, match="not a run directory"):
        RunDir.read(tmp_path / "empty")


def test_manifest_updates_are_atomic_and_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = "sk-ant-api03-" + "z" * 30
    monkeypatch.setenv("ANTHROPIC_API_KEY", planted)
    with RunDir.create(tmp_path, "run-m", {"run_id": "run-m", "note": planted}) as run:
        run.update_manifest(status="finished", echo=[planted])
        assert run.manifest["status"] == "finished"
    text = (tmp_path / "run-m" / "manifest.json").read_text()
    assert planted not in text and text.count("[secure]") == 2
    assert not list((tmp_path / "run-m").glob(".*tmp*")), "atomic writes leave no tmp file"
    assert RunDir.read(tmp_path / "run-m").manifest["sessions"], "each writing session is listed"
