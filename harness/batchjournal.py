"""What the batches journal (`batches.jsonl`, written through `RunDir.append_batch_entry`) says, and
the state of every batch it names.

A batch keeps running, and billing, on Anthropic's side whatever happens to the process that
submitted it, so the journal is the one durable record of what was submitted. The engine
(`harness.batch`) writes one line per step, each fsynced before it goes on:

- `intent`: before a create is sent: the local key (`b00001`, …), the attempt number, the
  call ids in order, the body's size and the wall time. A crash after it and before `created`
  leaves the batch *unacknowledged*: it may or may not exist on the server.
- `created`: the batch id the API answered (or, `adopted`, the one a resume found on the
  server's list for an unacknowledged intent): written before anything waits on the batch.
- `lost`: an unacknowledged intent with no batch on the server, or a batch the server no
  longer knows: its calls without a row are free to be submitted again.
- `refused`: the API refused the create for good (400/413): its calls got `error` rows.
- `collected`: every result of the batch was downloaded and stored (rows and events), or,
  under `--retry-errored`, kept for a follow-up batch (`rows` stored, `retried` kept).

`Ledger.load` folds the lines into one `JournaledBatch` per key. A journaled batch is never
submitted again: only the calls of `lost` batches (and calls a collected batch did not
answer, or answered with a result kept for a retry) are. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["BatchState", "JournaledBatch", "Ledger", "entry"]

BatchState = Literal["intent", "open", "collected", "lost", "refused"]
_OPS = {"intent", "created", "lost", "refused", "collected"}


def entry(op: str, key: str, **fields: Any) -> dict[str, Any]:
    """One journal line (a dict for `RunDir.append_batch_entry`)."""
    assert op in _OPS, op
    return {"op": op, "key": key, **fields}


@dataclass
class JournaledBatch:
    """One batch as the journal tells it."""

    key: str
    attempt: int
    call_ids: list[str]
    size: int = 0
    at: str | None = None  # the intent's wall time (ISO 8601, UTC)
    state: BatchState = "intent"
    batch_id: str | None = None
    created_at: str | None = None
    expires_at: str | None = None
    adopted: bool = False
    ended_at: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    note: str | None = None  # why it was lost or refused

    @property
    def acknowledged(self) -> bool:
        return self.batch_id is not None


class Ledger:
    """Every journaled batch by key, in journal order; `next_key()` names the next one."""

    def __init__(self, batches: Mapping[str, JournaledBatch] | None = None) -> None:
        self.batches: dict[str, JournaledBatch] = dict(batches or {})

    @classmethod
    def load(cls, entries: Iterable[Mapping[str, Any]]) -> Ledger:
        ledger = cls()
        for line in entries:
            ledger.apply(line)
        return ledger

    def apply(self, line: Mapping[str, Any]) -> JournaledBatch | None:
        """Fold one line in (a line about an unknown key, or of an unknown op, is ignored)."""
        op, key = line.get("op"), line.get("key")
        if not isinstance(key, str):
            return None
        if op == "intent":
            ids = line.get("call_ids")
            batch = JournaledBatch(
                key=key,
                attempt=int(line.get("attempt") or 1),
                call_ids=[str(c) for c in ids] if isinstance(ids, list) else [],
                size=int(line.get("size") or 0),
                at=line.get("at"),
            )
            self.batches[key] = batch
            return batch
        found = self.batches.get(key)
        if found is None:
            return None
        batch = found
        if op == "created":
            batch.state = "open"
            batch.batch_id = line.get("batch_id")
            batch.created_at = line.get("created_at")
            batch.expires_at = line.get("expires_at")
            batch.adopted = bool(line.get("adopted"))
        elif op == "collected":
            batch.state = "collected"
            batch.ended_at = line.get("ended_at")
            counts = line.get("counts")
            batch.counts = dict(counts) if isinstance(counts, dict) else {}
        elif op in ("lost", "refused"):
            batch.state = op
            batch.note = line.get("reason")
        return batch

    def next_key(self) -> str:
        numbers = [int(k[1:]) for k in self.batches if k.startswith("b") and k[1:].isdigit()]
        return f"b{max(numbers, default=0) + 1:05d}"

    def in_state(self, *states: BatchState) -> Iterator[JournaledBatch]:
        return (b for b in self.batches.values() if b.state in states)

    def known_ids(self) -> set[str]:
        """Every batch id the journal names (adopting one twice would collect it twice)."""
        return {b.batch_id for b in self.batches.values() if b.batch_id}

    def summary(self) -> dict[str, Any]:
        """For the manifest: batches per state, and the ids of those still open."""
        counts: dict[str, int] = {}
        for b in self.batches.values():
            counts[b.state] = counts.get(b.state, 0) + 1
        return {
            "batches": counts,
            "open": [b.batch_id for b in self.in_state("open")],
        }
