"""The methodology card: how a run's figures were measured, at the top of every report, comparison and history.

One builder for the three: `methodology(manifest, calls)` reads the manifest (its
`methodology` block written at run start by `harness.runfacts`, and the dataset, target,
versions, prices, window and loop-lag keys) and the prepared calls (the measured token
lengths and, for a run recorded without them, the window) and returns both

- `facts`: flat, typed values with stable names (the columns `harness history` adds to each
  row of `history.parquet`), and
- `card`: one line of text per field of `CARD_FIELDS`, in that order.

A fact a run did not record reads "not recorded": a card always lists every field. The
token lengths are the one figure computed here (the linear-interpolation percentile of
`harness.quantiles`, in polars). Must not read files or render whole reports.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import polars as pl

from harness.report.render_md import md_table
from harness.report.tables import Table

__all__ = ["CARD_FIELDS", "Methodology", "card_from_facts", "card_markdown", "card_table", "methodology"]

CARD_FIELDS: tuple[str, ...] = (
    "Dataset",
    "Prompt length",
    "Output length",
    "Load",
    "Window (UTC)",
    "Time of day",
    "Target",
    "Client host",
    "Versions",
    "Measurement health",
    "Prices",
)
NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class Methodology:
    facts: dict[str, Any]
    card: list[tuple[str, str]]

    def text(self, field: str) -> str:
        return dict(self.card)[field]


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    return None


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.1f}"
    return f"{int(v):,}"


def _lengths(calls: pl.DataFrame | None) -> dict[str, Any]:
    """Input (uncached + cache) and output tokens per successful call: p50, p95, max."""
    out: dict[str, Any] = {}
    names = ("input_tokens", "output_tokens")
    if calls is None or calls.height == 0 or not set(names) <= set(calls.columns):
        return {f"{n}_{s}": None for n in names for s in ("p50", "p95", "max")}
    cache = [c for c in ("cache_creation_input_tokens", "cache_read_input_tokens") if c in calls.columns]
    ok = calls.filter(pl.col("status") == "ok")
    frame = ok.select(
        pl.sum_horizontal("input_tokens", *cache).cast(pl.Float64).alias("input_tokens"),
        pl.col("output_tokens").cast(pl.Float64),
    )
    row = frame.select(
        *(
            expr
            for n in names
            for expr in (
                pl.col(n).quantile(0.5, interpolation="linear").alias(f"{n}_p50"),
                pl.col(n).quantile(0.95, interpolation="linear").alias(f"{n}_p95"),
                pl.col(n).max().alias(f"{n}_max"),
            )
        )
    ).row(0, named=True)
    for key, value in row.items():
        out[key] = None if value is None else round(float(value), 1)
    return out


def _window(manifest: dict[str, Any], calls: pl.DataFrame | None) -> tuple[datetime | None, datetime | None]:
    start, end = _when(manifest.get("started_at")), _when(manifest.get("ended_at"))
    if calls is not None and calls.height and "started_at" in calls.columns:
        if start is None:
            start = _when(calls.get_column("started_at").min())
        if end is None:
            end = _when(calls.get_column("finished_at").max())
    return start, end


def _load(manifest: dict[str, Any]) -> dict[str, Any]:
    recorded = _dict(_dict(manifest.get("methodology")).get("load"))
    if recorded:
        return recorded
    config = _dict(manifest.get("config"))  # a run recorded before the methodology block
    if not config:
        return {}
    rate = config.get("rate")
    return {
        "mode": "open loop" if rate is not None else "closed loop",
        "concurrency": None if rate is not None else config.get("concurrency"),
        "rate_per_s": rate,
        "arrival": config.get("arrival"),
        "repeats": config.get("repeats"),
        "max_in_flight": config.get("max_in_flight"),
    }


def _health(manifest: dict[str, Any]) -> dict[str, Any]:
    lag = _dict(manifest.get("loop_lag"))
    late = _dict(manifest.get("release_lateness"))
    workers = manifest.get("worker_health")
    worst = None
    if isinstance(workers, list) and workers:
        lags = [_dict(_dict(w).get("loop_lag")).get("p99_ms") for w in workers]
        worst = max((float(v) for v in lags if isinstance(v, int | float)), default=None)
    health = _dict(manifest.get("health"))  # report/health.py's figures, as the run end stored them
    delay, process = _dict(health.get("self_delay")), _dict(health.get("process"))
    guard = _dict(manifest.get("guard"))
    saturated = manifest.get("saturated")
    return {
        "loop_lag_samples": lag.get("samples"),
        "loop_lag_p50_ms": lag.get("p50_ms"),
        "loop_lag_p99_ms": lag.get("p99_ms"),
        "loop_lag_max_ms": lag.get("max_ms"),
        "worker_loop_lag_p99_ms": worst,
        "release_lateness_p99_ms": late.get("p99_ms") if late.get("samples") else None,
        "saturated": saturated if isinstance(saturated, bool) else None,
        "self_delay_share_5ms": delay.get("share_over_5ms"),
        "self_delay_share_20ms": delay.get("share_over_20ms"),
        "self_delay_first_token_p99_ms": _dict(delay.get("first_token_ms")).get("p99"),
        "harness_cpu_per_call_ms": process.get("cpu_per_call_ms"),
        "guard_asked": guard.get("asked") if guard.get("changed") else None,
        "guard_final": guard.get("final") if guard.get("changed") else None,
    }


def _health_text(f: Mapping[str, Any]) -> str:
    parts: list[str] = []
    if f.get("loop_lag_p99_ms") is not None:
        parts.append(
            f"event-loop lag p50 {f.get('loop_lag_p50_ms') or 0:.2f} ms, p99 {f['loop_lag_p99_ms']:.2f} ms, "
            f"max {f.get('loop_lag_max_ms') or 0:.1f} ms ({int(f.get('loop_lag_samples') or 0):,} samples)"
        )
    if f.get("worker_loop_lag_p99_ms") is not None:
        parts.append(f"worst worker loop-lag p99 {f['worker_loop_lag_p99_ms']:.2f} ms")
    if f.get("release_lateness_p99_ms") is not None:
        parts.append(f"release lateness p99 {f['release_lateness_p99_ms']:.2f} ms")
    if f.get("saturated") is not None:
        parts.append("saturated: could not keep to the schedule" if f["saturated"] else "not saturated")
    if f.get("self_delay_share_5ms") is not None:
        text = f"self-delay over 5 ms in {100 * f['self_delay_share_5ms']:.1f} % of calls"
        if f.get("self_delay_share_20ms") is not None:
            text += f" (over 20 ms {100 * f['self_delay_share_20ms']:.1f} %)"
        if f.get("self_delay_first_token_p99_ms") is not None:
            text += f", p99 {f['self_delay_first_token_p99_ms']:.1f} ms at the first token"
        parts.append(text)
    if f.get("harness_cpu_per_call_ms") is not None:
        parts.append(f"harness CPU {f['harness_cpu_per_call_ms']:.2f} ms per call")
    if f.get("guard_asked") is not None:
        parts.append(f"timing guard: concurrency {f['guard_asked']} asked, {f['guard_final']} at the end")
    return "; ".join(parts) if parts else NOT_RECORDED


def _scalar(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _prices(manifest: dict[str, Any], calls: pl.DataFrame | None) -> dict[str, Any]:
    prices = _dict(manifest.get("prices"))
    stored: str | None = None
    if calls is not None and calls.height and "price_version" in calls.columns:
        got = calls.get_column("price_version").drop_nulls().unique().sort().to_list()
        stored = " / ".join(str(v) for v in got) or None
    data = _when(prices.get("data_timestamp") or prices.get("auto_update_timestamp"))
    effective = _when(prices.get("resolved_at"))
    overrides = sorted(
        m for m, info in _dict(prices.get("models")).items() if _dict(info).get("source") == "override"
    )
    source = prices.get("library") or None
    if source and overrides:
        source = f"{source} + [prices] overrides ({', '.join(overrides)})"
    version = prices.get("version")
    label = stored or prices.get("label")
    if label is None and version:
        label = f"{prices.get('library', 'genai-prices')} {version}"
    return {
        "price_source": source,
        "price_library_version": version,
        "price_version": label,
        "price_data_date": data.date().isoformat() if data else None,
        "price_effective_date": effective.date().isoformat() if effective else None,
    }


def _prices_text(f: Mapping[str, Any]) -> str:
    if not any(f.get(k) for k in ("price_source", "price_version", "price_library_version")):
        return NOT_RECORDED
    data = f"data of {f['price_data_date']}" if f.get("price_data_date") else "the data bundled with it"
    text = (
        f"{f.get('price_source') or 'source ' + NOT_RECORDED} {f.get('price_library_version') or ''}".rstrip()
        + f" ({data}), effective {f.get('price_effective_date') or NOT_RECORDED}; the costs shown are the run's own"
    )
    label = f.get("price_version")
    effective = f"effective {f.get('price_effective_date')})"
    if label and effective not in str(label):  # rows priced with another table than the manifest names
        text += f" (rows: {label})"
    return text


def methodology(manifest: Mapping[str, Any] | None, calls: pl.DataFrame | None = None) -> Methodology:
    """The card and the flat facts of one run (see the module docstring)."""
    m = dict(manifest or {})
    block = _dict(m.get("methodology"))
    ds = _dict(m.get("dataset")) if isinstance(m.get("dataset"), Mapping) else {"path": m.get("dataset")}
    ds_block = _dict(block.get("dataset"))
    chars, caps = _dict(ds_block.get("prompt_chars")), _dict(ds_block.get("max_tokens"))
    lengths = _lengths(calls)
    load = _load(m)
    start, end = _window(m, calls)
    client = _dict(block.get("client"))
    versions = _dict(m.get("versions"))
    config = _dict(m.get("config"))
    host = m.get("base_url_host")
    target_host = urlsplit(f"//{host}").hostname if isinstance(host, str) and host else None
    health = _health(m)
    price_facts = _prices(m, calls)
    workers = m.get("workers")

    facts: dict[str, Any] = {
        "dataset_path": ds.get("path") or ds.get("name"),
        "dataset_sha256": ds.get("sha256"),
        "dataset_cases": ds.get("cases") if ds.get("cases") is not None else ds_block.get("cases"),
        "prompt_chars_p50": chars.get("p50"),
        "prompt_chars_p95": chars.get("p95"),
        "prompt_chars_max": chars.get("max"),
        "max_tokens_p50": caps.get("p50"),
        "max_tokens_max": caps.get("max"),
        **lengths,
        "load_mode": "Message Batches" if m.get("mode") == "batch" else load.get("mode"),
        "concurrency": load.get("concurrency"),
        "rate_per_s": load.get("rate_per_s"),
        "arrival": load.get("arrival"),
        "repeats": load.get("repeats"),
        "workers": workers if isinstance(workers, int) else None,
        "window_start": start,
        "window_end": end,
        "window_s": (end - start).total_seconds() if start and end else None,
        "time_of_day_utc": start.strftime("%H:%M") if start else None,
        "weekday_utc": start.strftime("%A") if start else None,
        "target": m.get("target") if isinstance(m.get("target"), str) else None,
        "target_host": target_host,
        "client_cpus": client.get("cpus"),
        "client_os": " ".join(str(client[k]) for k in ("os", "arch") if client.get(k)) or None,
        "python_version": client.get("python") or versions.get("python"),
        "sdk_version": client.get("sdk")
        or (f"anthropic {versions['anthropic']}" if versions.get("anthropic") else None),
        "harness_version": client.get("harness") or versions.get("harness"),
        "git_sha": m.get("git_sha"),
        "event_loop": client.get("event_loop") or config.get("event_loop"),
        **health,
        **price_facts,
    }
    return Methodology(facts, card_from_facts(facts))


def card_from_facts(f: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The card's lines from the flat facts (a run's, or a stored `history.parquet` row's)."""
    f = defaultdict(lambda: None, f)  # a fact an older history lacks reads "not recorded"

    def known(*keys: str) -> bool:
        return any(f.get(k) is not None for k in keys)

    sha = f["dataset_sha256"]
    cases = f"{_num(f['dataset_cases'])} cases" if f["dataset_cases"] is not None else "cases " + NOT_RECORDED
    dataset = f"{f['dataset_path'] or 'path ' + NOT_RECORDED} · sha256 {sha or NOT_RECORDED} · {cases}"
    prompt = NOT_RECORDED
    if known("prompt_chars_p50", "input_tokens_p50"):
        parts = []
        if known("prompt_chars_p50"):
            parts.append(
                f"{_num(f['prompt_chars_p50'])} / {_num(f['prompt_chars_p95'])} / "
                f"{_num(f['prompt_chars_max'])} characters (p50 / p95 / max of the cases)"
            )
        if known("input_tokens_p50"):
            parts.append(
                f"{_num(f['input_tokens_p50'])} / {_num(f['input_tokens_p95'])} / "
                f"{_num(f['input_tokens_max'])} input tokens per successful call (p50 / p95 / max)"
            )
        prompt = "; ".join(parts)
    output = NOT_RECORDED
    if known("output_tokens_p50", "max_tokens_p50"):
        parts = []
        if known("output_tokens_p50"):
            parts.append(
                f"{_num(f['output_tokens_p50'])} / {_num(f['output_tokens_p95'])} / "
                f"{_num(f['output_tokens_max'])} output tokens per successful call (p50 / p95 / max)"
            )
        if known("max_tokens_p50"):
            parts.append(f"max_tokens p50 {_num(f['max_tokens_p50'])}, max {_num(f['max_tokens_max'])}")
        output = "; ".join(parts)
    load = NOT_RECORDED
    if f["load_mode"]:
        if f["load_mode"] == "open loop":
            load = f"open loop at {f['rate_per_s']} calls/s ({f['arrival'] or 'poisson'} arrivals)"
        elif f["load_mode"] == "closed loop":
            load = f"closed loop, concurrency {f['concurrency']}"
        else:
            load = str(f["load_mode"])
        if f["repeats"] is not None:
            load += f"; {f['repeats']} repeat(s) per case"
        if f["workers"] is not None:
            load += f"; {f['workers']} worker process(es)"
    start, end = f["window_start"], f["window_end"]
    window = NOT_RECORDED
    if start:
        window = f"{start:%Y-%m-%d %H:%M:%S} → " + (f"{end:%Y-%m-%d %H:%M:%S}" if end else "?")
        if f["window_s"] is not None:
            window += f" ({f['window_s']:,.1f} s)"
    tod = f"{f['time_of_day_utc']} UTC, {f['weekday_utc']}" if start else NOT_RECORDED
    target = NOT_RECORDED
    if f["target"]:
        target = str(f["target"]) + (f" at {f['target_host']}" if f["target_host"] else "")
    client = NOT_RECORDED
    if known("client_cpus", "python_version", "event_loop"):
        bits = []
        if f["client_cpus"] is not None:
            bits.append(f"{f['client_cpus']} CPU(s) usable")
        if f["client_os"]:
            bits.append(str(f["client_os"]))
        bits.append(f"event loop {f['event_loop'] or NOT_RECORDED}")
        client = ", ".join(bits)
    versions = NOT_RECORDED
    if known("python_version", "sdk_version", "harness_version"):
        versions = (
            f"Python {f['python_version'] or NOT_RECORDED}; SDK {f['sdk_version'] or NOT_RECORDED}; "
            f"harness {f['harness_version'] or NOT_RECORDED}"
        )
        if f["git_sha"]:
            versions += f" ({str(f['git_sha'])[:12]})"
    return list(
        zip(
            CARD_FIELDS,
            (
                dataset,
                prompt,
                output,
                load,
                window,
                tod,
                target,
                client,
                versions,
                _health_text(f),
                _prices_text(f),
            ),
            strict=True,
        )
    )


def card_table(cards: Sequence[tuple[str, Methodology]]) -> Table:
    """The card as a table: one value column per run (`(column title, Methodology)`)."""
    header = ["methodology", *(name for name, _ in cards)] if len(cards) > 1 else ["methodology", ""]
    rows = [[field, *(m.text(field) for _, m in cards)] for field in CARD_FIELDS]
    return Table("Methodology", header, rows, note="How these figures were measured (see the manifest).")


def card_markdown(cards: Sequence[tuple[str, Methodology]]) -> str:
    """`## Methodology` and the card as a markdown table."""
    t = card_table(cards)
    return f"## {t.title}\n\n{md_table(t.header, t.rows)}\n"
