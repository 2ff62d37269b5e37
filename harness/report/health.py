"""Measurement health: did the harness distort what it measured, and by how much?

One function, `measure_health(calls, manifest)`, computes every figure once, for the
three places that show them: the end-of-run console lines (`harness.bench`), the
manifest's `health` and the report (its top lines and its "Measurement health" section).
Its inputs are the run's calls (the self-delay columns: `harness.selfdelay`) and what
the run recorded in its manifest (loop lag, the harness's CPU, the loop's wait for a CPU,
the hypervisor's steal, the timing guard's changes, open-loop lateness).

A call's self-delay is the larger of its two marks' (first token, last byte): the bound
on its TTFT and latency. The figures are distorted when more than `WARN_SHARE` of the
successful calls have a self-delay over 5 ms, whatever the number of loop-lag samples
(a saturated loop takes few: issue #16). The corrected view subtracts each call's
self-delay from its TTFT and latency before taking percentiles: an estimate, labelled so.
This module computes; `tables` and the renderers only format what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from harness.records import arm_expr, arm_word
from harness.report.tables import Table, fmt_s

__all__ = ["SEVERE_MS", "THRESHOLD_MS", "WARN_SHARE", "Health", "health_tables", "measure_health"]

THRESHOLD_MS = 5.0
SEVERE_MS = 20.0
WARN_SHARE = 0.05  # more calls than this over THRESHOLD_MS: the figures include the harness's delay

_QS = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


@dataclass
class Health:
    """Every figure of the section; `notices` are the report's top lines and the console's warnings."""

    calls: int = 0  # successful calls with a self-delay estimate
    over: int = 0  # of them, self-delay over THRESHOLD_MS
    severe: int = 0  # over SEVERE_MS
    first_token_ms: dict[str, float] = field(default_factory=dict)  # p50, p99, max
    last_byte_ms: dict[str, float] = field(default_factory=dict)
    corrected: list[dict[str, Any]] = field(
        default_factory=list
    )  # per arm: measured and corrected percentiles
    loop_lag: dict[str, Any] = field(default_factory=dict)
    process: dict[str, Any] = field(default_factory=dict)
    guard: dict[str, Any] = field(default_factory=dict)
    open_loop: dict[str, Any] = field(default_factory=dict)
    distorted: bool = False
    notices: list[str] = field(default_factory=list)
    word: str = "model"  # how the corrected view names a row: "arm" when calls had variants
    workers: int = 1
    workers_auto: bool = False

    @property
    def share(self) -> float | None:
        return self.over / self.calls if self.calls else None

    @property
    def severe_share(self) -> float | None:
        return self.severe / self.calls if self.calls else None

    @property
    def eventful(self) -> bool:
        """Whether the report gives health a section of its own (else one line among the facts)."""
        return bool(self.notices)

    def figures(self) -> dict[str, Any]:
        """The manifest's `health.self_delay`: the same numbers the report and the console show."""
        return {
            "calls": self.calls,
            "over_5ms": self.over,
            "over_20ms": self.severe,
            "share_over_5ms": None if self.share is None else round(self.share, 4),
            "share_over_20ms": None if self.severe_share is None else round(self.severe_share, 4),
            "first_token_ms": self.first_token_ms,
            "last_byte_ms": self.last_byte_ms,
            "distorted": self.distorted,
            "notices": self.notices,
        }

    def line(self) -> str:
        """The one-line summary a calm run's report carries among its facts."""
        parts = [_share_text(self)]
        lag = self.loop_lag
        if lag.get("samples"):
            parts.append(f"loop lag p99 {lag.get('p99_ms', 0.0):.1f} ms ({lag['samples']} samples)")
        parts += _process_texts(self.process)
        if self.workers > 1:
            parts.append(_workers_text(self.workers, self.workers_auto))
        return "Measurement health: " + "; ".join(p for p in parts if p) + "."


def _ms(values: pl.Series) -> dict[str, float]:
    if values.len() == 0:
        return {}
    return {
        "p50": round(1000 * float(values.quantile(0.5, interpolation="linear") or 0.0), 3),
        "p99": round(1000 * float(values.quantile(0.99, interpolation="linear") or 0.0), 3),
        "max": round(1000 * float(values.max() or 0.0), 3),  # type: ignore[arg-type]
    }


def measure_health(calls: pl.LazyFrame | pl.DataFrame, manifest: dict[str, Any]) -> Health:
    """The run's measurement health from its calls and its manifest (see the module)."""
    lazy = calls.lazy() if isinstance(calls, pl.DataFrame) else calls
    first, last = pl.col("client_delay_first_token_s"), pl.col("client_delay_last_byte_s")
    frame = (
        lazy.filter((pl.col("status") == "ok") & (first.is_not_null() | last.is_not_null()))
        .select(
            pl.col("model"),
            pl.col("variant"),
            pl.col("ttft_s"),
            pl.col("latency_s"),
            first,
            last,
            pl.max_horizontal(first, last).alias("self_delay_s"),
        )
        .collect()
    )
    h = Health(
        loop_lag=dict(manifest.get("loop_lag") or {}),
        process=dict((manifest.get("health") or {}).get("process") or {}),
        guard=dict(manifest.get("guard") or {}),
        workers=int(manifest.get("workers") or 1),
        workers_auto=bool(manifest.get("workers_auto")),
    )
    h.calls = frame.height
    if h.calls:
        worst = frame.get_column("self_delay_s")
        h.over = int((worst > THRESHOLD_MS / 1000).sum())
        h.severe = int((worst > SEVERE_MS / 1000).sum())
        h.first_token_ms = _ms(frame.get_column("client_delay_first_token_s").drop_nulls())
        h.last_byte_ms = _ms(frame.get_column("client_delay_last_byte_s").drop_nulls())
        h.corrected = _corrected(frame)
        h.word = arm_word(frame.get_column("variant").unique().to_list())
    h.distorted = bool(h.share is not None and h.share > WARN_SHARE)
    h.open_loop = _open_loop(manifest)
    h.notices = _notices(h)
    return h


def _corrected(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Per arm: TTFT and latency percentiles as measured, and with each call's self-delay subtracted."""
    pairs = (
        ("ttft", pl.col("ttft_s"), pl.col("ttft_s") - pl.col("client_delay_first_token_s").fill_null(0.0)),
        (
            "latency",
            pl.col("latency_s"),
            pl.col("latency_s") - pl.col("client_delay_last_byte_s").fill_null(0.0),
        ),
    )
    aggs = [pl.len().alias("n")]
    for name, measured, corrected in pairs:
        for q_name, q in _QS:
            aggs.append(measured.quantile(q, interpolation="linear").alias(f"{name}_{q_name}_s"))
            aggs.append(
                corrected.clip(lower_bound=0.0)
                .quantile(q, interpolation="linear")
                .alias(f"{name}_{q_name}_corr_s")
            )
    out = frame.with_columns(arm_expr()).group_by("arm").agg(aggs).sort("arm")
    return list(out.iter_rows(named=True))


def _open_loop(manifest: dict[str, Any]) -> dict[str, Any]:
    released = int(manifest.get("released") or 0)
    if not released:
        return {}
    late = int(manifest.get("late_admissions") or 0)
    return {
        "saturated": bool(manifest.get("saturated")),
        "released": released,
        "late_admissions": late,
        "late_share": late / released,
        "release_lateness": dict(manifest.get("release_lateness") or {}),
    }


def _share_text(h: Health) -> str:
    if not h.calls:
        return "no self-delay estimates (no successful call, or a run from before they were recorded)"
    return (
        f"{h.over:,} of {h.calls:,} calls ({h.share:.1%}) waited over {THRESHOLD_MS:g} ms in the harness itself, "
        f"{h.severe:,} ({h.severe_share:.1%}) over {SEVERE_MS:g} ms"
    )


def _process_texts(p: dict[str, Any]) -> list[str]:
    out = []
    if p.get("harness_cpu_share") is not None:
        text = f"harness CPU {100 * p['harness_cpu_share']:.0f} % of a core"
        if p.get("cpu_per_call_ms") is not None:
            text += f" ({p['cpu_per_call_ms']:.2f} ms per call)"
        out.append(text)
    if p.get("loop_wait_share") is not None:
        out.append(f"its event loop waited for a CPU {100 * p['loop_wait_share']:.0f} % of the time")
    if p.get("steal_share") is not None:
        out.append(f"hypervisor steal {100 * p['steal_share']:.1f} %")
    return out


def _notices(h: Health) -> list[str]:
    """What the report's top lines and the end of the run say, when something is to be said."""
    notices = []
    if h.distorted:
        ft, lb = h.first_token_ms, h.last_byte_ms
        notices.append(
            "The timings include the harness's own delay: "
            + _share_text(h)
            + f"; median self-delay {ft.get('p50', 0.0):.1f} ms at the first token (p99 {ft.get('p99', 0.0):.1f} ms), "
            f"{lb.get('p50', 0.0):.1f} ms at the last byte (p99 {lb.get('p99', 0.0):.1f} ms). TTFT and latency "
            "figures are that much too high; the Measurement health section's corrected view subtracts "
            "each call's estimate. Lower the load per process (--workers, fewer streams)."
        )
    g = h.guard
    if g.get("changed"):
        notices.append(
            f"The timing guard changed the run's concurrency: asked {g.get('asked')}, ran as low as "
            f"{g.get('lowest')} and ended at {g.get('final')} concurrent calls, because "
            + (
                f"the harness could time about {g['capacity_streams']} stream(s) at once"
                if g.get("capacity_streams")
                else "its event loop was too busy to time more"
            )
            + f" ({_fmt_ms(g.get('cpu_per_call_ms'))} of loop CPU per call). Load-dependent figures are for that concurrency; --workers spreads the load over processes, "
            "--no-timing-guard keeps the asked concurrency."
        )
    o = h.open_loop
    if o.get("saturated"):
        late = o.get("release_lateness") or {}
        notices.append(
            f"The run could not keep to its arrival schedule: {o['late_admissions']:,} of {o['released']:,} calls "
            f"({o['late_share']:.1%}) started more than one arrival interval late, release lateness p99 "
            f"{late.get('p99_ms', 0.0):.1f} ms (max {late.get('max_ms', 0.0):.1f} ms); latency from schedule "
            "includes that queueing."
        )
    return notices


def _fmt_ms(value: Any) -> str:
    return "?" if value is None else f"{value:.2f} ms"


def health_tables(h: Health) -> list[Table]:
    """The report's "Measurement health" section: the figures, then the corrected view."""
    figures = Table("Measurement health", ["figure", "value"], note=_note())
    rows = figures.rows
    rows.append(["calls with a self-delay estimate", f"{h.calls:,}"])
    if h.calls:
        rows.append([f"self-delay over {THRESHOLD_MS:g} ms", f"{h.over:,} ({h.share:.1%})"])
        rows.append([f"self-delay over {SEVERE_MS:g} ms", f"{h.severe:,} ({h.severe_share:.1%})"])
        for label, d in (("at the first token", h.first_token_ms), ("at the last byte", h.last_byte_ms)):
            if d:
                rows.append(
                    [
                        f"self-delay {label}",
                        f"p50 {d['p50']:.1f} ms, p99 {d['p99']:.1f} ms, max {d['max']:.1f} ms",
                    ]
                )
    lag = h.loop_lag
    if lag:
        rows.append(
            [
                "event loop lag (a 10 ms timer's lateness)",
                f"p50 {lag.get('p50_ms', 0.0):.1f} ms, p99 {lag.get('p99_ms', 0.0):.1f} ms, "
                f"max {lag.get('max_ms', 0.0):.1f} ms over {lag.get('samples', 0)} samples",
            ]
        )
    p = h.process
    if p.get("harness_cpu_s") is not None:
        rows.append(
            [
                "harness CPU (all its processes)",
                f"{p['harness_cpu_s']:.2f} s over {p.get('wall_s', 0.0):.2f} s: "
                f"{100 * (p.get('harness_cpu_share') or 0.0):.0f} % of one of {p.get('cores')} cores, "
                f"{_fmt_ms(p.get('cpu_per_call_ms'))} per call",
            ]
        )
    if p.get("loop_cpu_share") is not None:
        rows.append(
            [
                "event loop thread",
                f"on a CPU {100 * p['loop_cpu_share']:.0f} % of the time, waiting for one "
                f"{100 * (p.get('loop_wait_share') or 0.0):.0f} %",
            ]
        )
    if p.get("steal_share") is not None:
        rows.append(["hypervisor steal (share of the machine's CPU time)", f"{100 * p['steal_share']:.2f} %"])
    if h.workers:
        rows.append(["processes timing the calls", _workers_text(h.workers, h.workers_auto)])
    g = h.guard
    if g:
        rows.append(["timing guard", _guard_text(g)])
    o = h.open_loop
    if o:
        late = o.get("release_lateness") or {}
        rows.append(
            [
                "open-loop releases",
                f"lateness p50 {late.get('p50_ms', 0.0):.2f} ms, p99 {late.get('p99_ms', 0.0):.2f} ms; "
                f"{o['late_admissions']:,} of {o['released']:,} started over one interval late"
                + ("; saturated" if o.get("saturated") else ""),
            ]
        )
    tables = [figures]
    if h.corrected:
        corrected = Table(
            "Corrected view (an estimate: each call's self-delay subtracted)",
            [h.word, "n", *(f"TTFT {q}" for q, _ in _QS), *(f"latency {q}" for q, _ in _QS)],
            note="Each cell: as measured → with the call's own self-delay estimate subtracted. The estimate "
            "follows the harness's own read delay closely on a saturated loop (make perf, section selfdelay); "
            "the measured figures are the ones the other tables use.",
        )
        for r in h.corrected:
            cells = [str(r["arm"]), str(r["n"])]
            for name in ("ttft", "latency"):
                for q, _ in _QS:
                    cells.append(f"{fmt_s(r[f'{name}_{q}_s'])} → {fmt_s(r[f'{name}_{q}_corr_s'])}")
            corrected.rows.append(cells)
        tables.append(corrected)
    return tables


def _workers_text(n: int, auto: bool) -> str:
    if n <= 1:
        return "1 (this process)"
    return f"{n} worker processes" + (
        " (chosen automatically for the load: harness.workers)" if auto else " (--workers)"
    )


def _guard_text(g: dict[str, Any]) -> str:
    if not g.get("enabled"):
        return "off (open loop, or --no-timing-guard)" + (
            f"; about {g['capacity_streams']} streams per process at {_fmt_ms(g.get('cpu_per_call_ms'))} per call"
            if g.get("capacity_streams")
            else ""
        )
    if not g.get("changed"):
        return f"kept the asked concurrency {g.get('asked')}" + (
            f" (capacity about {g['capacity_streams']} streams)" if g.get("capacity_streams") else ""
        )
    changes = g.get("changes") or []
    first = changes[0] if changes else {}
    return (
        f"changed the concurrency: asked {g.get('asked')}, lowest {g.get('lowest')}, final {g.get('final')} "
        f"({len(changes)} change(s); first at {first.get('at_s', 0.0):.2f} s: {first.get('why', '')})"
    )


def _note() -> str:
    return (
        "Self-delay: how long a call's first delta (or last byte) waited in the harness's own process before "
        "its time mark was taken (the calls table's client_delay_* columns, estimated per call from the event "
        "loop's iterations). The loop's wait for a CPU and the hypervisor's steal are the machine's doing: "
        "other processes or the host had the CPU."
    )
