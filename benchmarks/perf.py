"""`make perf`: every performance target of issues #6 and #14 (batch memory), measured side by side in one run, against the simulator.

`python -m benchmarks.perf [--quick] [--only NAME[,NAME]] [--out-dir DIR]`

Each section starts its own simulator process (loopback, the perf profile of
`perfkit`) and runs the harness, or a comparison load, in fresh worker
processes, so CPU and memory figures belong to one process each. Every figure
is printed beside its target with PASS/MISS; all figures are saved to
`results/perf/<UTC timestamp>.json` and compared with the previous file there.
The exit code is 1 when a target is missed. Every load is bounded in count and
time; durations shorter than the issue's are printed with the figure.

This module must not change the harness: it only measures it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.perfkit import ROOT, SimServer, TruthProcess, flat_defaults, pct, run_scenario, write_dataset
from harness import procs

__all__ = ["SECTIONS", "Verdict", "main", "run_sections"]

Verdict = tuple[str, str, float, str, float, str]  # id, label, value, op, target, unit


def _log(*parts: Any) -> None:
    print(*parts, flush=True)


class Ctx:
    """What a section needs: quick mode, a scratch directory, and where verdicts go."""

    def __init__(self, quick: bool, scratch: Path) -> None:
        self.quick = quick
        self.scratch = scratch
        self.figures: dict[str, Any] = {}
        self.verdicts: list[Verdict] = []

    def judge(self, vid: str, label: str, value: float, op: str, target: float, unit: str = "") -> None:
        self.verdicts.append((vid, label, float(value), op, float(target), unit))
        ok = _passes(float(value), op, float(target))
        _log(
            f"  [{'PASS' if ok else 'MISS'}] {vid:<5} {label:<58} {value:>12.4g} {unit:<6} target {op} {target:g}"
        )

    def dataset(self, name: str, n: int, max_tokens: int) -> Path:
        path = self.scratch / f"{name}.jsonl"
        if not path.exists():
            write_dataset(path, n, max_tokens=max_tokens)
        return path

    def cli(self, sim: SimServer, **extra: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "models": "claude-haiku-4-5",
            "results_dir": str(self.scratch / "runs"),
            "base_url": sim.url,
            "posthog_host": sim.url,
            "target": "simulator",
            "progress": "off",
            "report": False,
        }
        base.update(extra)
        return base


def _passes(value: float, op: str, target: float) -> bool:
    return value <= target if op == "<=" else value >= target if op == ">=" else value < target


def _baseline(
    mode: str,
    url: str,
    calls: int,
    concurrency: int,
    max_tokens: int,
    model: str,
    shape: str = "text",
    rate: float | None = None,
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result = Path(fh.name)
    try:
        out = subprocess.run(
            [
                *(sys.executable, "-m", "benchmarks.baselines", mode, url),
                *("--calls", str(calls), "--concurrency", str(concurrency)),
                *("--max-tokens", str(max_tokens), "--model", model, "--shape", shape),
                *(("--rate", str(rate)) if rate is not None else ()),
                *("--out", str(result)),
            ],
            capture_output=True,
            cwd=ROOT,
            timeout=300,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"baseline {mode} failed:\n{out.stderr.decode(errors='replace')[-2000:]}")
        return json.loads(result.read_text())  # type: ignore[no-any-return]
    finally:
        result.unlink(missing_ok=True)


# ---------------------------------------------------------------- sections


def capacity(ctx: Ctx) -> None:
    """The simulator's own ceiling, so a figure below can be blamed on it or not."""
    from benchmarks import sim_capacity

    figures = sim_capacity.run(_log)
    ctx.figures["capacity"] = {k: v for k, v in figures.items() if k != "detail"}


def peers(ctx: Ctx) -> None:
    """Target 0: CPU per streamed 20-token request, req/s at 256, open loop 300/s, startup time."""
    n = 2000 if ctx.quick else 8000
    ds = ctx.dataset("peers", 1000, 20)
    out: dict[str, Any] = {}
    with SimServer() as sim:
        c0 = sim.cpu_s()
        r = run_scenario(
            {"cli": ctx.cli(sim, dataset=str(ds), repeats=n // 1000, concurrency=256, stream=True)}
        )
        sim_cpu = sim.cpu_s() - c0
        out["closed"] = _brief(r, sim_cpu)
        calls_n = max(1, r["calls"])
        run_cpu = r["cpu_s"] + r["workers_cpu_s"]
        cpu_ms = 1000 * (run_cpu + r["events_cpu_s"]) / calls_n
        _log(
            f"  closed loop, concurrency 256, {r['calls']} streamed 20-token calls: {r['calls_per_s']:.0f} req/s, "
            f"harness CPU {run_cpu:.2f} s ({1000 * run_cpu / calls_n:.2f} ms/call: SDK, records, parquet, "
            f"events built and journaled) + {r['events_cpu_s']:.2f} s in the PostHog delivery child "
            f"({1000 * r['events_cpu_s'] / calls_n:.2f} ms/call); simulator CPU {sim_cpu:.2f} s over "
            f"{r['span_s']:.2f} s ({100 * sim_cpu / max(r['span_s'], 1e-9):.0f} % of a core); loop lag p99 "
            f"{r['outcome']['loop_lag']['p99_ms']:.1f} ms; {r['workers']} process(es)"
        )
        floor = _baseline("harness-client", sim.url, 2000, 256, 20, "claude-haiku-4-5")
        out["client_only_cpu_ms"] = 1000 * floor["cpu_s"] / 2000
        _log(
            f"  the same calls through the harness's client alone (SDK + its SSE reader, no runner, sinks or "
            f"events): {out['client_only_cpu_ms']:.2f} ms CPU/call: the floor the SDK sets on this machine"
        )
        ctx.judge("T0a", "client CPU per streamed 20-token request, all-in (ms)", cpu_ms, "<=", 2.0, "ms")
        ctx.judge("T0b", "requests/s at concurrency 256", r["calls_per_s"], ">=", 400, "req/s")

        seconds = 5 if ctx.quick else 15
        c0 = sim.cpu_s()
        r = _open_300(ctx, sim, ds, seconds)
        sim_cpu = sim.cpu_s() - c0
        out["open"] = _brief(r, sim_cpu)
        late = r["outcome"]["release_lateness"]
        _log(
            f"  open loop 300/s for {seconds} s: {r['calls']} calls, {r['errors']} errors {r['error_kinds']}, "
            f"achieved {r['calls_per_s']:.1f}/s, release lateness p50 {late['p50_ms']:.2f} ms p99 {late['p99_ms']:.2f} ms, "
            f"loop lag p99 {r['outcome']['loop_lag']['p99_ms']:.1f} ms; {r['workers']} process(es)"
        )
        ctx.judge(
            "T0c", f"open loop 300/s x {seconds}s: harness-caused errors", r["errors"], "<=", 0, "calls"
        )
        ctx.judge("T0d", "open loop 300/s: release lateness p99 (ms)", late["p99_ms"], "<", 2.0, "ms")
        r2 = _open_300(ctx, sim, ds, seconds, workers=2)
        out["open_2_workers"] = _brief(r2, 0.0)
        late2 = r2["outcome"]["release_lateness"]
        _log(
            f"  the same with --workers 2: {r2['errors']} errors, achieved {r2['calls_per_s']:.1f}/s, release "
            f"lateness p50 {late2['p50_ms']:.2f} ms p99 {late2['p99_ms']:.2f} ms (worst worker), loop lag p99 "
            f"{r2['outcome']['loop_lag']['p99_ms']:.1f} ms"
        )

        out["startup_s"] = _startup(ctx, sim, ds)
        out["import_anthropic_s"] = _import_time("anthropic")
        _log(
            f"  `import anthropic` alone in a fresh interpreter: {out['import_anthropic_s']:.3f} s (best of 3): "
            "the floor under this figure, since every call goes through the SDK"
        )
        ctx.judge("T0e", "command start -> first request sent (s)", out["startup_s"], "<", 2.0, "s")
    ctx.figures["peers"] = out


def _open_300(ctx: Ctx, sim: SimServer, ds: Path, seconds: int, **extra: Any) -> dict[str, Any]:
    calls = 300 * seconds
    cli = ctx.cli(
        sim,
        dataset=str(ds),
        repeats=calls // 1000 + 1,
        max_calls=calls,
        rate=300.0,
        arrival="constant",
        stream=True,
        **extra,
    )
    return run_scenario({"cli": cli})


def _brief(r: dict[str, Any], sim_cpu: float) -> dict[str, Any]:
    keep = ("calls", "ok", "errors", "error_kinds", "calls_per_s", "cpu_s", "wall_s", "span_s", "peak_rss_mb")
    brief = {k: r[k] for k in keep}
    brief.update(
        loop_lag=r["outcome"]["loop_lag"],
        release_lateness=r["outcome"]["release_lateness"],
        events=r["events"],
        sim_cpu_s=round(sim_cpu, 2),
    )
    return brief


def _startup(ctx: Ctx, sim: SimServer, ds: Path) -> float:
    """Wall time from `python -m harness run` starting to the simulator receiving the first Messages request."""
    sim.reset()
    env = procs.environment({"POSTHOG_HOST": sim.url})
    args = [sys.executable, "-m", "harness", "run", "--dataset", str(ds), "--models", "claude-haiku-4-5"]
    args += ["--base-url", sim.url, "--target", "simulator", "--max-calls", "20", "--no-report"]
    args += ["--progress", "off", "--results-dir", str(ctx.scratch / "startup")]
    began = time.time()
    done = subprocess.run(args, capture_output=True, cwd=ROOT, env=env, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"harness run failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
    first = min(r["received_unix"] for r in sim.requests())
    _log(
        f"  startup: first Messages request {first - began:.3f} s after the command started (whole run {time.time() - began:.2f} s)"
    )
    return first - began


def _import_time(module: str) -> float:
    """Wall time of `python -c "import MODULE"` (interpreter start included), best of three."""
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=ROOT, timeout=60)
        best = min(best, time.perf_counter() - began)
    return best


def overhead(ctx: Ctx) -> None:
    """Target 1: harness calls/s over a bare SDK loop at concurrency 64, plain (non-streamed) calls."""
    n = 2000 if ctx.quick else 6000
    ds = ctx.dataset("plain", 1000, 20)
    with SimServer() as sim:
        bare = _baseline("sdk-loop", sim.url, n, 64, 20, "claude-haiku-4-5")
        r = run_scenario(
            {"cli": ctx.cli(sim, dataset=str(ds), repeats=n // 1000, concurrency=64, stream=False)}
        )
        bare2 = _baseline("sdk-loop", sim.url, n, 64, 20, "claude-haiku-4-5")
    bare_rate = (bare["calls_per_s"] + bare2["calls_per_s"]) / 2
    ratio = r["calls_per_s"] / bare_rate
    _log(
        f"  bare SDK loop (aiohttp transport): {bare['calls_per_s']:.0f} and {bare2['calls_per_s']:.0f} calls/s "
        f"(before and after), {1000 * bare['cpu_s'] / n:.2f} ms CPU/call; harness (limiter, records, parquet, "
        f"PostHog): {r['calls_per_s']:.0f} calls/s, {1000 * r['cpu_s'] / r['calls']:.2f} ms CPU/call"
    )
    ctx.figures["overhead"] = {
        "bare_calls_per_s": [bare["calls_per_s"], bare2["calls_per_s"]],
        "bare_cpu_ms_per_call": 1000 * bare["cpu_s"] / n,
        "harness_calls_per_s": r["calls_per_s"],
        "harness_cpu_ms_per_call": 1000 * r["cpu_s"] / r["calls"],
        "ratio": ratio,
        "loop_lag": r["outcome"]["loop_lag"],
    }
    ctx.judge("T1", "harness / bare SDK loop, calls/s at concurrency 64", ratio, ">=", 0.85)


def stream_cost(ctx: Ctx) -> None:
    """Target 2: CPU per streamed content delta: harness client vs bare aiohttp lines vs SDK stream(), on text,
    thinking and tool-input streams."""
    calls = 60 if ctx.quick else 300
    model = "claude-3-5-haiku-20241022"  # 2,000 tokens/s: one delta per write, as a real stream
    # (shape, modes, calls, max_tokens): thinking streams are ~4,200 deltas long (a 4,096 budget, 35-85 %
    # thinking, then text), tool streams ~900 input_json deltas; fewer calls keep the delta counts close.
    loads = [
        ("text", ("aiohttp-lines", "harness-client", "sdk-stream"), calls, 200),
        ("thinking", ("aiohttp-lines", "harness-client"), max(4, calls // 20), 4096),
        ("tools", ("aiohttp-lines", "harness-client"), max(4, calls // 4), 2000),
    ]
    per: dict[str, dict[str, float]] = {}
    with SimServer() as sim:
        # Two interleaved rounds, the cheaper of each: a round can lose ~10 % to the machine's noise.
        for rnd in (1, 2):
            for shape, modes, n, max_tokens in loads:
                if ctx.quick and rnd == 2 and shape != "text":
                    continue  # a smoke run: one round of the extra shapes
                mine = per.setdefault(shape, {})
                for mode in modes:
                    b = _baseline(mode, sim.url, n, 8, max_tokens, model, shape)
                    us = 1e6 * b["cpu_s"] / max(1, b["deltas"])
                    mine[mode] = min(us, mine.get(mode, us))
                    _log(
                        f"  round {rnd} {shape:<8} {mode:<15} {b['deltas']:>7} deltas  CPU {b['cpu_s']:.3f} s  "
                        f"{us:.2f} µs/delta"
                    )
    ratios = {shape: p["harness-client"] / p["aiohttp-lines"] for shape, p in per.items()}
    ratio_sdk = per["text"]["sdk-stream"] / per["text"]["harness-client"]
    ctx.figures["stream_cost"] = {
        "us_per_delta": per["text"],
        "vs_lines": ratios["text"],
        "sdk_over_harness": ratio_sdk,
        "by_shape": {shape: {"us_per_delta": per[shape], "vs_lines": ratios[shape]} for shape in per},
    }
    ctx.judge("T2a", "harness CPU/delta ÷ bare aiohttp line reader", ratios["text"], "<=", 1.5, "x")
    ctx.judge("T2b", "SDK messages.stream() CPU/delta ÷ harness", ratio_sdk, ">=", 4.0, "x")
    ctx.judge("T2c", "harness ÷ aiohttp lines, thinking streams", ratios["thinking"], "<=", 1.5, "x")
    ctx.judge("T2d", "harness ÷ aiohttp lines, tool-input streams", ratios["tools"], "<=", 1.5, "x")


def accuracy(ctx: Ctx) -> None:
    """Target 3: TTFT and latency against the simulator's ground truth, 500 streams x 40 deltas/s.

    Ground truth is what the simulator did by its own clock: `sent_ttft_s` / `sent_total_s`
    (receipt → first delta / last byte handed to its socket). The error against its
    intentions (`intended_*`) is printed too: it adds the simulator's own lateness when it
    is short of CPU. Then the same load over two worker processes, and a quarter of the
    load, show what the figures are made of on this machine.
    """
    seconds = 4 if ctx.quick else 10
    fig = _accuracy_run(ctx, 500, seconds, None)
    ctx.figures["accuracy"] = fig
    ctx.judge("T3a", "TTFT - truth, median (ms)", abs(fig["ttft_err_ms"]["p50"]), "<=", 1.0, "ms")
    ctx.judge("T3b", "TTFT - truth, p99 (ms)", abs(fig["ttft_err_ms"]["p99"]), "<=", 5.0, "ms")
    ctx.judge("T3c", "latency - truth, median (ms)", abs(fig["latency_err_ms"]["p50"]), "<=", 2.0, "ms")
    ctx.judge("T3d", "latency - truth, p99 (ms)", abs(fig["latency_err_ms"]["p99"]), "<=", 10.0, "ms")
    ctx.figures["accuracy_2_workers"] = _accuracy_run(ctx, 500, seconds, 2)
    ctx.figures["accuracy_quarter_load"] = _accuracy_run(ctx, 125, seconds, None)


def _accuracy_run(ctx: Ctx, streams: int, seconds: float, workers: int | None) -> dict[str, Any]:
    tokens = 40  # 50 ms + 1 s per call at 40 tokens/s
    n = int(streams * seconds / 1.05)
    ds = ctx.dataset("accuracy", 1000, tokens)
    extra = {} if workers is None else {"workers": workers}
    with SimServer() as sim:
        c0 = sim.cpu_s()
        r = run_scenario(
            {
                "cli": ctx.cli(
                    sim,
                    models="claude-sonnet-4-5",
                    dataset=str(ds),
                    repeats=n // 1000 + 1,
                    max_calls=n,
                    concurrency=streams,
                    stream=True,
                    **extra,
                ),
                "per_call": True,
            }
        )
        sim_cpu = sim.cpu_s() - c0
        truth = {t["call_id"]: t for t in sim.requests() if t.get("call_id") and t.get("status") == 200}
    pc = r["per_call"]
    err: dict[str, list[float]] = {"ttft": [], "lat": [], "ttft_i": [], "lat_i": [], "sim_late": []}
    for cid, ttft, lat in zip(pc["call_id"], pc["ttft_s"], pc["latency_s"], strict=True):
        t = truth.get(cid)
        if t is None or ttft is None or lat is None or t.get("sent_total_s") is None:
            continue
        err["ttft"].append(1000 * (ttft - t["sent_ttft_s"]))
        err["lat"].append(1000 * (lat - t["sent_total_s"]))
        err["ttft_i"].append(1000 * (ttft - t["intended_ttft_s"]))
        err["lat_i"].append(1000 * (lat - t["intended_total_s"]))
        err["sim_late"].append(1000 * (t["sent_ttft_s"] - t["intended_ttft_s"]))
    fig = {
        "streams": streams,
        "workers": r["workers"],
        "calls": r["calls"],
        "matched": len(err["ttft"]),
        "deltas_per_s": r["output_tokens"] / max(r["span_s"], 1e-9),
        "ttft_err_ms": {"p50": pct(err["ttft"], 0.5), "p99": pct(err["ttft"], 0.99)},
        "latency_err_ms": {"p50": pct(err["lat"], 0.5), "p99": pct(err["lat"], 0.99)},
        "vs_intended_ttft_err_ms": {"p50": pct(err["ttft_i"], 0.5), "p99": pct(err["ttft_i"], 0.99)},
        "vs_intended_latency_err_ms": {"p50": pct(err["lat_i"], 0.5), "p99": pct(err["lat_i"], 0.99)},
        "sim_first_delta_late_ms": {"p50": pct(err["sim_late"], 0.5), "p99": pct(err["sim_late"], 0.99)},
        "loop_lag": r["outcome"]["loop_lag"],
        "sim_cpu_pct": 100 * sim_cpu / max(r["span_s"], 1e-9),
        "harness_cpu_pct": 100
        * (r["cpu_s"] + r["workers_cpu_s"] + r["events_cpu_s"])
        / max(r["span_s"], 1e-9),
    }
    # What the full load would need: every call has 40 deltas, so CPU scales with deltas/s.
    scale = streams * 40 / 1.05 / max(fig["deltas_per_s"], 1.0)
    fig["cores_needed"] = {
        "harness": fig["harness_cpu_pct"] / 100 * scale,
        "simulator": fig["sim_cpu_pct"] / 100 * scale,
        "available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    f = fig
    _log(
        f"  {streams} streams x 40 deltas/s for ~{seconds} s, {f['workers']} process(es): {r['calls']} calls "
        f"({f['matched']} matched), {f['deltas_per_s']:,.0f} deltas/s; loop lag p99 {f['loop_lag']['p99_ms']:.1f} ms; "
        f"CPU: simulator {f['sim_cpu_pct']:.0f} % of a core, harness {f['harness_cpu_pct']:.0f} %\n"
        f"    error vs what the simulator sent: TTFT p50 {f['ttft_err_ms']['p50']:.2f} / p99 {f['ttft_err_ms']['p99']:.2f} ms, "
        f"latency p50 {f['latency_err_ms']['p50']:.2f} / p99 {f['latency_err_ms']['p99']:.2f} ms\n"
        f"    error vs what it intended: TTFT p50 {f['vs_intended_ttft_err_ms']['p50']:.2f} / p99 "
        f"{f['vs_intended_ttft_err_ms']['p99']:.2f} ms, latency p50 {f['vs_intended_latency_err_ms']['p50']:.2f} / p99 "
        f"{f['vs_intended_latency_err_ms']['p99']:.2f} ms (simulator's first delta late by p50 "
        f"{f['sim_first_delta_late_ms']['p50']:.2f} / p99 {f['sim_first_delta_late_ms']['p99']:.2f} ms)\n"
        f"    at the full {streams * 40 / 1.05:,.0f} deltas/s this load needs ~{f['cores_needed']['harness']:.2f} cores "
        f"for the harness (delivery child included) + ~{f['cores_needed']['simulator']:.2f} for the simulator; "
        f"this machine has {f['cores_needed']['available']}"
    )
    return fig


def pacing(ctx: Ctx) -> None:
    """Target 4: the limiter alone (benchmarks.pacing), then the runner's open-loop releases."""
    from benchmarks import pacing as limiter_pacing

    lim = limiter_pacing.run(_log, quick=ctx.quick)
    at500 = next(r for r in lim["results"] if r["mode"] == "rpm" and r["target_per_s"] == 500.0)
    ctx.judge("T4a", "limiter CPU at 500 admissions/s (% of a core)", at500["cpu_pct"], "<", 2.0, "%")
    for r in lim["results"]:
        ctx.judge(
            "T4b",
            f"limiter {r['mode']} {r['target_per_s']:g}/s: achieved error (%)",
            abs(r["achieved_error_pct"]),
            "<=",
            1.0,
            "%",
        )
    seconds = 3 if ctx.quick else 10
    _log(
        f"  runner open loop, {seconds} s per rate x mode (issue: 30 s; shortened to fit the suite in ~10 min)"
    )
    ds = ctx.dataset("pacing", 1000, 5)
    runs = []
    with SimServer() as sim:
        for arrival in ("constant", "poisson"):
            for rate in (5.0, 50.0, 500.0):
                n = int(rate * seconds)
                r = run_scenario(
                    {
                        "cli": ctx.cli(
                            sim,
                            dataset=str(ds),
                            repeats=n // 1000 + 1,
                            max_calls=n,
                            rate=rate,
                            arrival=arrival,
                            stream=False,
                            seed=7,
                        ),
                        "per_call": True,
                    }
                )
                runs.append(_pacing_figures(ctx, r, rate, arrival))
    ctx.figures["pacing"] = {"limiter": lim, "runner": runs}


def _pacing_figures(ctx: Ctx, r: dict[str, Any], rate: float, arrival: str) -> dict[str, Any]:
    started = sorted(s for s in r["per_call"]["started_s"] if s is not None)
    sched = sorted(s for s in r["per_call"]["scheduled_s"] if s is not None)
    achieved = (len(started) - 1) / (started[-1] - started[0]) if len(started) > 1 else 0.0
    planned = (len(sched) - 1) / (sched[-1] - sched[0]) if len(sched) > 1 else rate
    # Constant: against the target. Poisson: against the plan's own draw (a short Poisson run's rate varies).
    reference = rate if arrival == "constant" else planned
    err = 100 * (achieved / reference - 1)
    worst = 0
    j = 0
    for i, t in enumerate(started):
        while started[j] <= t - 1.0:
            j += 1
        worst = max(worst, i - j + 1)
    late = r["outcome"]["release_lateness"]
    tag = f"{arrival} {rate:g}/s"
    ctx.judge(
        "T4c",
        f"runner {tag}: achieved vs {'target' if arrival == 'constant' else 'plan'} (%)",
        abs(err),
        "<=",
        1.0,
        "%",
    )
    if arrival == "constant":
        # +1: a 1-s window can hold both ends of an exactly even schedule when release jitter is ~1 ms.
        ctx.judge(
            "T4d", f"runner {tag}: max calls in a 1-s window (+1 edge)", worst, "<=", rate * 1.05 + 1, "calls"
        )
    ctx.judge("T4e", f"runner {tag}: release lateness p99 (ms)", late["p99_ms"], "<", 2.0, "ms")
    return {
        "arrival": arrival,
        "rate": rate,
        "calls": r["calls"],
        "errors": r["errors"],
        "achieved_per_s": achieved,
        "planned_per_s": planned,
        "error_pct": err,
        "max_in_1s": worst,
        "release_lateness": late,
        "loop_lag": r["outcome"]["loop_lag"],
    }


def ratelimits(ctx: Ctx) -> None:
    """Target 5: client limits at 95 % of the simulator's: 429s under 0.1 %, throughput >= 90 % of the binding limit."""
    seconds = 15 if ctx.quick else 45
    limits = {"rpm": 6000, "itpm": 2_000_000, "otpm": 1_000_000}
    profile = ctx.scratch / "ratelimits.toml"
    profile.write_text(
        '[models."claude-opus-4-5"]\n' + "".join(f"{k} = {int(v * 0.95)}\n" for k, v in limits.items())
    )
    n = int(limits["rpm"] / 60 * seconds)
    ds = ctx.dataset("ratelimits", 1000, 20)
    with SimServer(limits=limits) as sim:
        r = run_scenario(
            {
                "cli": ctx.cli(
                    sim,
                    profile=str(profile),
                    models="claude-opus-4-5",
                    dataset=str(ds),
                    repeats=n // 1000 + 1,
                    max_calls=n,
                    concurrency=64,
                    stream=False,
                ),
                "per_call": True,
            }
        )
        truth = sim.requests()
    limited = sum(1 for t in truth if t.get("status") == 429)
    started = sorted(s for s in r["per_call"]["started_s"] if s is not None)
    # Steady throughput after the first 5 s (both sides start with a full bucket).
    steady = [s for s in started if s >= started[0] + 5.0]
    per_min = 60 * (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0
    share = per_min / limits["rpm"]
    _log(
        f"  {seconds} s (issue: 3 min), RPM binding ({limits['rpm']}/min on the simulator, 95 % on the client): "
        f"{len(truth)} requests, {limited} answered 429; steady {per_min:.0f} requests/min"
    )
    ctx.figures["ratelimits"] = {
        "requests": len(truth),
        "limited": limited,
        "per_min": per_min,
        "share": share,
    }
    ctx.judge("T5a", "share of requests answered 429 (%)", 100 * limited / max(1, len(truth)), "<", 0.1, "%")
    ctx.judge("T5b", "throughput / binding limit", share, ">=", 0.90)


def memory(ctx: Ctx) -> None:
    """Target 6: peak RSS of a long run, and RSS at 10 / 50 / 100 % of it."""
    n = 5000 if ctx.quick else 100_000
    ds = ctx.dataset("memory", 1000, 10)
    with SimServer() as sim:
        r = run_scenario(
            {
                "cli": ctx.cli(sim, dataset=str(ds), repeats=n // 1000, concurrency=64, stream=False),
                "rss_marks": True,
            },
            timeout_s=900,
        )
    marks = r["rss_marks_mb"]
    _log(
        f"  {r['calls']:,} calls (issue: 200,000; shortened to fit the suite) in {r['wall_s']:.0f} s: RSS "
        + ", ".join(f"{k} {v:.0f} MB" for k, v in marks.items())
        + f"; peak {r['peak_rss_mb']:.0f} MB"
    )
    growth = marks.get("100%", 0.0) - marks.get("10%", 0.0)
    ctx.figures["memory"] = {
        "calls": r["calls"],
        "rss_mb": marks,
        "peak_rss_mb": r["peak_rss_mb"],
        "growth_mb": growth,
    }
    ctx.judge("T6a", "peak RSS (MB)", r["peak_rss_mb"], "<", 300, "MB")
    ctx.judge("T6b", "RSS growth from 10 % to 100 % of the run (MB)", growth, "<=", 30, "MB")


def batch(ctx: Ctx) -> None:
    """Issue #14: a 200,000-call batch run, peak RSS while it submits and collects (results streamed)."""
    n = 20_000 if ctx.quick else 200_000
    ds = ctx.dataset("memory", 1000, 10)
    # Batches of 100,000 requests end ~3 s after their creation at this time scale.
    with SimServer(time_scale=0.0005) as sim:
        r = run_scenario(
            {
                "cli": ctx.cli(sim, dataset=str(ds), repeats=n // 1000, mode="batch", batch_poll_s=0.5),
                "rss_marks": True,
            },
            timeout_s=1800,
        )
    marks = r["rss_marks_mb"]
    events = r["events"]
    _log(
        f"  {r['calls']:,} calls in {n // 100_000 or 1} batch(es) in {r['wall_s']:.0f} s "
        f"({r['cpu_s']:.0f} s CPU): RSS at 10/50/100 % of the results "
        + ", ".join(f"{v:.0f}" for v in marks.values())
        + f" MB; peak {r['peak_rss_mb']:.0f} MB (the plan, submission, the streamed results, calls.parquet); "
        f"events delivered {events.get('delivered')} of {events.get('handed')}"
    )
    growth = marks.get("100%", 0.0) - marks.get("10%", 0.0)
    ctx.figures["batch"] = {
        "calls": r["calls"],
        "rss_mb": marks,
        "peak_rss_mb": r["peak_rss_mb"],
        "growth_mb": growth,
        "wall_s": r["wall_s"],
        "events": events,
    }
    ctx.judge("T9a", f"batch run of {n:,} calls: peak RSS (MB)", r["peak_rss_mb"], "<", 300, "MB")
    ctx.judge("T9b", "batch run: RSS growth from 10 % to 100 % of the results (MB)", growth, "<=", 30, "MB")


def micro(ctx: Ctx) -> None:
    """Target 7: pytest-benchmark micro-benchmarks of the per-call hot path."""
    out_json = ctx.scratch / "micro.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "tests/test_microbench.py",
            "--benchmark-enable",
            f"--benchmark-json={out_json}",
            "-p",
            "no:randomly",
        ],
        capture_output=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"micro-benchmarks failed:\n{done.stdout.decode(errors='replace')[-3000:]}")
    data = json.loads(out_json.read_text())
    means = {b["name"]: 1e6 * b["stats"]["mean"] for b in data["benchmarks"]}
    for name, us in sorted(means.items()):
        _log(f"  {name:<44} {us:>9.2f} µs")
    hot = sum(us for name, us in means.items() if not name.endswith("calc_price_reference"))
    ctx.figures["micro"] = {"us": means, "hot_path_us": hot}
    ctx.judge("T7", "record + price + event + store append (µs per call)", hot, "<", 100, "µs")


def reports(ctx: Ctx) -> None:
    """Target 8: reports over 1,000,000 rows."""
    from benchmarks import report_scale

    rows = 100_000 if ctx.quick else 1_000_000
    fig = report_scale.run(_log, rows=rows)
    ctx.figures["reports"] = fig
    ctx.judge("T8a", f"report over {rows:,} rows (s)", fig["report_s"], "<", 10.0, "s")
    ctx.judge("T8b", f"report over {rows:,} rows, peak RSS (GiB)", fig["peak_rss_gib"], "<", 2.0, "GiB")


# ---------------------------------------------------------------- health (issue #16)

# The accuracy load: 60 ms to the first token, then the rest at once (one write: the simulator
# stays cheap), so 256 streams saturate the harness and not the simulator.
_SATURATING_PROFILE = flat_defaults(0.06) + '\n[models."claude-haiku-4-5"]\n'


def _errors(per_call: dict[str, list[Any]], truth: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    """Per matched call: TTFT and latency minus what the truth server did (ms), and the self-delay columns."""
    out: dict[str, list[float]] = {"ttft": [], "latency": [], "delay_first": [], "delay_last": []}
    first_delays = per_call.get("delay_first_s") or [None] * len(per_call["call_id"])
    last_delays = per_call.get("delay_last_s") or [None] * len(per_call["call_id"])
    for cid, ttft, lat, d1, d2 in zip(
        per_call["call_id"], per_call["ttft_s"], per_call["latency_s"], first_delays, last_delays, strict=True
    ):
        t = truth.get(cid)
        if t is None or ttft is None or lat is None or t.get("first_ns") is None:
            continue
        out["ttft"].append(1000 * ttft - (t["first_ns"] - t["received_ns"]) / 1e6)
        out["latency"].append(1000 * lat - (t["last_ns"] - t["received_ns"]) / 1e6)
        out["delay_first"].append(1000 * (d1 or 0.0))
        out["delay_last"].append(1000 * (d2 or 0.0))
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    if n < 3:
        return float("nan")
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else float("nan")


def _timed_pair(
    ctx: Ctx,
    server: TruthProcess,
    ds: Path,
    n: int,
    *,
    concurrency: int = 64,
    rate: float | None = None,
    **extra: Any,
) -> tuple[dict[str, Any], dict[str, list[float]], dict[str, Any], dict[str, list[float]]]:
    """The bare reader, then the harness, on the same load against the truth server: runs and errors."""
    server.reset()
    bare = _baseline("aiohttp-timed", server.url, n, concurrency, 20, "claude-haiku-4-5", rate=rate)
    bare_err = _errors(bare["per_call"], server.truth())
    server.reset()
    load: dict[str, Any] = {"rate": rate, "arrival": "constant"} if rate else {"concurrency": concurrency}
    cli = _truth_cli(ctx, server, ds, n, **load, **extra)
    r = run_scenario({"cli": cli, "per_call": True})
    return bare, bare_err, r, _errors(r["per_call"], server.truth())


def _say_errors(
    label: str, bare_err: dict[str, list[float]], err: dict[str, list[float]], r: dict[str, Any]
) -> None:
    _log(
        f"  {label}: {len(err['ttft'])} calls matched; TTFT error mean {_mean(err['ttft']):.2f} ms, p50 "
        f"{pct(err['ttft'], 0.5):.2f}, p99 {pct(err['ttft'], 0.99):.2f} (bare reader: mean {_mean(bare_err['ttft']):.2f}, "
        f"p50 {pct(bare_err['ttft'], 0.5):.2f}, p99 {pct(bare_err['ttft'], 0.99):.2f}); latency error mean "
        f"{_mean(err['latency']):.2f} ms (bare {_mean(bare_err['latency']):.2f}); {r['calls_per_s']:.0f} calls/s, "
        f"loop lag p99 {r['outcome']['loop_lag']['p99_ms']:.1f} ms; guard: {_guard_brief(r['outcome'].get('guard') or {})}"
    )


def _guard_brief(g: dict[str, Any]) -> str:
    if not g.get("enabled"):
        return "off"
    if not g.get("changed"):
        return f"kept {g.get('asked')} (capacity ~{g.get('capacity_streams')})"
    return f"asked {g.get('asked')}, lowest {g.get('lowest')}, final {g.get('final')} (capacity ~{g.get('capacity_streams')})"


def health(ctx: Ctx) -> None:
    """Issue #16: TTFT error against a server of exactly known timing beside a bare aiohttp reader, marginal CPU
    per call and its split by component."""
    ds = ctx.dataset("health", 1000, 20)
    n64 = 1000 if ctx.quick else 3000
    n256 = 2000 if ctx.quick else 5000
    out: dict[str, Any] = {}
    with TruthProcess() as server:
        _log(
            "  server: 60 ms to the first of 7 deltas (20 tokens), then 20 ms apart; both clients tag each request"
        )
        # H1: closed loop, 64 streams.
        bare, bare_err, r, err = _timed_pair(ctx, server, ds, n64, concurrency=64)
        _say_errors("closed loop 64", bare_err, err, r)
        out["c64"] = {
            "bare_mean_ms": _mean(bare_err["ttft"]),
            "harness_mean_ms": _mean(err["ttft"]),
            "run": _brief(r, 0.0),
        }
        ctx.judge(
            "H1",
            "c=64: harness mean TTFT error - bare reader's (ms)",
            _mean(err["ttft"]) - _mean(bare_err["ttft"]),
            "<=",
            1.5,
            "ms",
        )
        # H2: closed loop, 256 streams: with the guard (the default), and without it (then the flags must say so).
        bare, bare_err, r, err = _timed_pair(ctx, server, ds, n256, concurrency=256)
        _say_errors("closed loop 256, timing guard on (default)", bare_err, err, r)
        over = _mean(err["ttft"]) - _mean(bare_err["ttft"])
        server.reset()
        cli = _truth_cli(ctx, server, ds, n256, concurrency=256, timing_guard=False)
        r2 = run_scenario({"cli": cli, "per_call": True})
        err2 = _errors(r2["per_call"], server.truth())
        _say_errors("closed loop 256, --no-timing-guard", bare_err, err2, r2)
        late = [d for e, d in zip(err2["ttft"], err2["delay_first"], strict=True) if e > 5.0]
        flagged = sum(1 for d in late if d > 5.0) / len(late) if late else 1.0
        said = bool((r2.get("health", {}).get("self_delay") or {}).get("distorted"))
        _log(
            f"  without the guard: {len(late)} calls with a TTFT error over 5 ms, {100 * flagged:.1f} % of them flagged "
            f"by client_delay_first_token_s > 5 ms; the report's top line says so: {said}"
        )
        out["c256"] = {
            "bare_mean_ms": _mean(bare_err["ttft"]),
            "guarded_mean_ms": _mean(err["ttft"]),
            "unguarded_mean_ms": _mean(err2["ttft"]),
            "unguarded_flagged_share": flagged,
            "unguarded_top_line": said,
            "guard": r["outcome"].get("guard"),
        }
        ok = over <= 3.0 or (flagged >= 0.95 and said)
        _log(
            f"  H2 holds by: {'the error' if over <= 3.0 else ''}{' and ' if over <= 3.0 and flagged >= 0.95 and said else ''}"
            f"{'the flags' if flagged >= 0.95 and said else ''}"
        )
        # The two ways H2 can hold, printed with their own targets; the verdict is H2.
        _log(f"  H2a: guard on, harness mean TTFT error - bare's: {over:.2f} ms (target <= 3)")
        _log(
            f"  H2b: no guard, calls with error > 5 ms flagged: {100 * flagged:.1f} % (target >= 95); top line: {said}"
        )
        ctx.judge("H2", "c=256: H2a, or H2b with the report's top line saying so", float(ok), ">=", 1.0)
        # H3: open loop 300/s.
        seconds = 5 if ctx.quick else 15
        bare, bare_err, r, err = _timed_pair(ctx, server, ds, 300 * seconds, rate=300.0)
        _say_errors(f"open loop 300/s for {seconds} s", bare_err, err, r)
        late_ms = r["outcome"]["release_lateness"]
        bare_late = sorted(bare.get("release_lateness_s") or [0.0])
        _log(
            f"  release lateness p50 {late_ms['p50_ms']:.2f} ms, p99 {late_ms['p99_ms']:.2f} ms (bare reader's: p99 "
            f"{1000 * pct(bare_late, 0.99):.2f} ms)"
        )
        out["open300"] = {
            "release_lateness": late_ms,
            "ttft_p99_ms": pct(err["ttft"], 0.99),
            "bare_ttft_p99_ms": pct(bare_err["ttft"], 0.99),
        }
        ctx.judge("H3a", "open loop 300/s: release lateness p99 (ms)", late_ms["p99_ms"], "<", 2.0, "ms")
        ctx.judge(
            "H3b",
            "open loop 300/s: TTFT error p99 - bare reader's (ms)",
            pct(err["ttft"], 0.99) - pct(bare_err["ttft"], 0.99),
            "<=",
            2.0,
            "ms",
        )
        # H4: marginal CPU per call, PostHog delivery included.
        out["marginal"] = _marginal_cpu(ctx, server, ds)
        ctx.judge(
            "H4",
            "marginal client CPU per streamed call, PostHog included (ms)",
            out["marginal"]["harness_ms"],
            "<=",
            0.8,
            "ms",
        )
        # The CPU split per component, at 64 and 256 streams.
        out["split"] = {c: _split(ctx, server, ds, c, n64) for c in (64, 256)}
    ctx.figures["health"] = out


def selfdelay(ctx: Ctx) -> None:
    """Issue #16: the per-call self-delay estimate against the simulator's ground truth on a saturating load."""
    ctx.figures["selfdelay"] = _estimate_accuracy(ctx)


def _truth_cli(ctx: Ctx, server: TruthProcess, ds: Path, n: int, **load: Any) -> dict[str, Any]:
    """A harness run of `n` streamed calls from the 1,000-case dataset `ds` against the truth server,
    in one process (the bare reader it is compared with has one)."""
    return ctx.cli(
        server,  # type: ignore[arg-type]
        dataset=str(ds),
        repeats=n // 1000 + 1,
        max_calls=n,
        stream=True,
        target="custom",
        workers=1,
        **load,
    )


def _marginal_cpu(ctx: Ctx, server: TruthProcess, ds: Path) -> dict[str, float]:
    small, big = (300, 3000)
    cpu: dict[int, float] = {}
    bare_cpu: dict[int, float] = {}
    for n in (small, big):
        cli = _truth_cli(ctx, server, ds, n, concurrency=64)
        r = run_scenario({"cli": cli})
        cpu[n] = r["cpu_s"] + r["workers_cpu_s"] + r["events_cpu_s"]
        bare_cpu[n] = _baseline("aiohttp-timed", server.url, n, 64, 20, "claude-haiku-4-5")["cpu_s"]
    harness_ms = 1000 * (cpu[big] - cpu[small]) / (big - small)
    bare_ms = 1000 * (bare_cpu[big] - bare_cpu[small]) / (big - small)
    _log(
        f"  marginal CPU per call ({big:,}-call run minus {small}-call run, over {big - small:,}; concurrency 64): "
        f"harness {harness_ms:.3f} ms (PostHog delivery child included), bare aiohttp reader {bare_ms:.3f} ms"
    )
    return {"harness_ms": harness_ms, "bare_ms": bare_ms}


def _split(ctx: Ctx, server: TruthProcess, ds: Path, concurrency: int, n: int) -> dict[str, Any]:
    cli = _truth_cli(ctx, server, ds, n, concurrency=concurrency)
    r = run_scenario({"cli": cli, "split": True})
    calls = max(1, r["calls"])
    per = {k: 1e6 * v / calls for k, v in r["split_s"].items()}
    total = 1e6 * r["loop_cpu_s"] / calls
    _log(
        f"  loop-thread CPU per call at concurrency {concurrency} ({calls} calls, timers around each part): {total:.0f} µs"
    )
    for name, us in sorted(per.items(), key=lambda kv: -kv[1]):
        _log(f"    {name:<52} {us:>7.1f} µs  {100 * us / max(total, 1e-9):>5.1f} %")
    _log(
        f"    PostHog delivery child (its own process)               {1e6 * r['events_cpu_s'] / calls:>7.1f} µs"
    )
    return {"per_call_us": per, "loop_us": total, "delivery_child_us": 1e6 * r["events_cpu_s"] / calls}


def _estimate_accuracy(ctx: Ctx, streams: int = 256) -> dict[str, Any]:
    """On a saturating load (no guard) against the simulator: the estimate vs the actual TTFT error.

    200-token answers sent in one write after 60 ms: the harness parses 200 deltas per call
    while the simulator writes once, so the harness saturates before the simulator does (with
    20-token answers, since the client stopped going through the SDK per call, the simulator
    saturates first and its own lateness is most of the error).
    """
    n = 2000 if ctx.quick else 4000
    ds = ctx.dataset("health-sim", 1000, 200)
    with SimServer(profile=_SATURATING_PROFILE) as sim:
        r = run_scenario(
            {
                "cli": ctx.cli(
                    sim,
                    dataset=str(ds),
                    repeats=n // 1000 + 1,
                    max_calls=n,
                    stream=True,
                    concurrency=streams,
                    timing_guard=False,
                    workers=1,
                ),
                "per_call": True,
            }
        )
        truth = {t["call_id"]: t for t in sim.requests() if t.get("call_id") and t.get("status") == 200}
    actual: list[
        float
    ] = []  # the whole TTFT error: harness TTFT - the simulator's (receipt -> first delta sent)
    own: list[
        float
    ] = []  # the harness's side of it: its first-token mark - when the simulator sent the delta
    estimate: list[float] = []
    pc = r["per_call"]
    for cid, ttft, d1, started in zip(
        pc["call_id"], pc["ttft_s"], pc["delay_first_s"], pc["started_unix"], strict=True
    ):
        t = truth.get(cid)
        if t is None or ttft is None or d1 is None or started is None or t.get("sent_ttft_s") is None:
            continue
        actual.append(1000 * (ttft - t["sent_ttft_s"]))
        # One machine clock (wall time) on both sides: the mark vs the delta leaving the simulator.
        own.append(1000 * (started + ttft - (t["received_unix"] + t["sent_ttft_s"])))
        estimate.append(1000 * d1)
    ratio = pct(estimate, 0.5) / pct(actual, 0.5) if actual and pct(actual, 0.5) > 0 else float("nan")
    own_ratio = pct(estimate, 0.5) / pct(own, 0.5) if own and pct(own, 0.5) > 0 else float("nan")
    corr, own_corr = _pearson(actual, estimate), _pearson(own, estimate)
    lag = r["outcome"]["loop_lag"]
    _log(
        f"  simulator, {streams} streams, no guard: {len(actual)} calls; loop lag p99 {lag['p99_ms']:.1f} ms over "
        f"{lag['samples']} samples\n"
        f"    client_delay_first_token_s: p50 {pct(estimate, 0.5):.1f} ms, mean {_mean(estimate):.1f}, "
        f"p99 {pct(estimate, 0.99):.1f}\n"
        f"    whole TTFT error (harness TTFT - the simulator's sent_ttft_s): p50 {pct(actual, 0.5):.1f} ms, mean "
        f"{_mean(actual):.1f}, p99 {pct(actual, 0.99):.1f}; estimate/error medians {ratio:.2f}, correlation {corr:.3f}\n"
        f"    the harness's side of it (its mark - the delta leaving the simulator, one wall clock): p50 "
        f"{pct(own, 0.5):.1f} ms, mean {_mean(own):.1f}; estimate/error medians {own_ratio:.2f}, "
        f"correlation {own_corr:.3f}\n"
        f"    the rest of the whole error is the request's way in, the simulator reading it late under load "
        f"(p50 {pct(actual, 0.5) - pct(own, 0.5):.1f} ms): a bare client would see it too"
    )
    ctx.judge("H5a", "estimate median / whole TTFT error median (30 %)", ratio, ">=", 0.7)
    ctx.judge("H5b", "estimate median / whole TTFT error median (30 %)", ratio, "<=", 1.3)
    ctx.judge("H5c", "correlation of the estimate with the whole TTFT error", corr, ">=", 0.5)
    ctx.judge("H5d", "estimate median / the harness's side of the error (30 %)", own_ratio, ">=", 0.7)
    ctx.judge("H5e", "estimate median / the harness's side of the error (30 %)", own_ratio, "<=", 1.3)
    ctx.judge("H5f", "correlation of the estimate with the harness's side", own_corr, ">=", 0.5)
    return {
        "calls": len(actual),
        "actual_p50_ms": pct(actual, 0.5),
        "own_p50_ms": pct(own, 0.5),
        "estimate_p50_ms": pct(estimate, 0.5),
        "ratio": ratio,
        "correlation": corr,
        "own_ratio": own_ratio,
        "own_correlation": own_corr,
    }


SECTIONS: dict[str, Callable[[Ctx], None]] = {
    "capacity": capacity,
    "peers": peers,
    "overhead": overhead,
    "stream_cost": stream_cost,
    "accuracy": accuracy,
    "pacing": pacing,
    "ratelimits": ratelimits,
    "memory": memory,
    "batch": batch,
    "micro": micro,
    "reports": reports,
    "health": health,
    "selfdelay": selfdelay,
}


# ---------------------------------------------------------------- running, saving, comparing


def run_sections(names: list[str], quick: bool, scratch: Path) -> Ctx:
    ctx = Ctx(quick, scratch)
    for name in names:
        _log(f"\n== {name}: {(SECTIONS[name].__doc__ or '').strip()}")
        began = time.perf_counter()
        cpu0 = _cpu_ticks()
        try:
            SECTIONS[name](ctx)
        except Exception as exc:
            _log(f"  section {name} failed: {type(exc).__name__}: {str(exc)[-1500:]}")
            ctx.verdicts.append((name, f"section {name} ran", 0.0, ">=", 1.0, ""))
        steal = _steal_pct(cpu0, _cpu_ticks())
        ctx.figures.setdefault("steal_pct", {})[name] = steal
        _log(
            f"  ({time.perf_counter() - began:.1f} s; the hypervisor took {steal:.1f} % of this machine's CPU time "
            "meanwhile: stolen time pauses whatever ran on that CPU)"
        )
    return ctx


def _cpu_ticks() -> list[int]:
    """The machine's CPU time by state (/proc/stat); empty where there is none."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return []


def _steal_pct(before: list[int], after: list[int]) -> float:
    """Share of CPU time stolen by the hypervisor (the 8th field): a cause of ms-long stalls no code can avoid."""
    if len(before) < 8 or len(after) < 8:
        return 0.0
    delta = [b - a for a, b in zip(before, after, strict=False)]
    return 100.0 * delta[7] / max(1, sum(delta))


def _previous(out_dir: Path, current: Path) -> dict[str, Any] | None:
    files = sorted(p for p in out_dir.glob("*.json") if p != current)
    if not files:
        return None
    try:
        return json.loads(files[-1].read_text()) | {"_file": files[-1].name}
    except (OSError, json.JSONDecodeError):
        return None


def _compare(prev: dict[str, Any] | None, verdicts: list[Verdict]) -> None:
    if prev is None:
        _log("\nno previous results/perf/*.json to compare with")
        return
    before = {(v[0], v[1]): v[2] for v in prev.get("verdicts", [])}
    _log(f"\ncompared with {prev['_file']}:")
    for vid, label, value, _, _, unit in verdicts:
        old = before.get((vid, label))
        if old is None:
            continue
        change = f"{100 * (value / old - 1):+.1f} %" if old else "n/a"
        _log(f"  {vid:<5} {label:<58} {old:>10.4g} -> {value:<10.4g} {unit:<5} ({change})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf")
    parser.add_argument("--quick", action="store_true", help="smaller loads (a smoke run, not the figures)")
    parser.add_argument("--only", default="", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    parser.add_argument("--out-dir", default=str(ROOT / "results" / "perf"))
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    began = time.perf_counter()
    _log(f"make perf: sections {', '.join(names)}{' (quick)' if args.quick else ''}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="perf-") as tmp:
        ctx = run_sections(names, args.quick, Path(tmp))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{stamp}.json"
    missed = [v for v in ctx.verdicts if not _passes(v[2], v[3], v[4])]
    payload = {
        "timestamp": stamp,
        "quick": args.quick,
        "sections": names,
        "cores": os.cpu_count(),
        "seconds": round(time.perf_counter() - began, 1),
        "figures": ctx.figures,
        "verdicts": [list(v) for v in ctx.verdicts],
        "missed": [v[0] + " " + v[1] for v in missed],
    }
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    _log(
        f"\n== summary ({payload['seconds']:.0f} s): {len(ctx.verdicts) - len(missed)} PASS, {len(missed)} MISS"
    )
    for vid, label, value, op, target, unit in ctx.verdicts:
        verdict = "PASS" if _passes(value, op, target) else "MISS"
        _log(f"  [{verdict}] {vid:<5} {label:<58} {value:>12.4g} {unit:<6} target {op} {target:g}")
    _log(f"figures saved to {os.path.relpath(path)}")  # relative: no machine path in a pasted log
    _compare(_previous(out_dir, path), ctx.verdicts)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
