"""Shared pieces of `make perf`: the simulator profile, datasets, a simulator process, and running the harness in a worker process.

Every load scenario runs the harness in a fresh interpreter (`python -m benchmarks.perfkit
--scenario JSON`), against a simulator in a third process, so no scenario's threads,
caches or imports leak into the next, and the harness's CPU and RSS are its own.
This module must not judge figures against targets: `perf.py` does that.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import loops, procs
from harness.simlauncher import SimulatorProcess

__all__ = [
    "PERF_PROFILE",
    "SimServer",
    "TruthProcess",
    "cpu_of",
    "flat_defaults",
    "pct",
    "run_scenario",
    "write_dataset",
]

ROOT = Path(__file__).resolve().parent.parent


# Jitter-free models with real ids (so genai-prices prices them as in a real run):
#   claude-haiku-4-5   no delay at all, answers exactly max_tokens long
#   claude-sonnet-4-5  50 ms to first token, then 40 tokens/s (the accuracy target)
#   claude-3-5-haiku-20241022  no first-token delay, 2,000 tokens/s: one delta per write (stream cost)
#   claude-opus-4-5    no delay, rate-limited pool (the rate-limit target)
#   bench-*            the simulator's own capacity figures (benchmarks.sim_capacity)
def flat_defaults(ttft_s: float = 0.0) -> str:
    """A profile's `[defaults]`: no jitter, instant output, no limits; `ttft_s` to the first token."""
    return f"""[defaults]
ttft_median_s = {ttft_s}
ttft_sigma = 0.0
ttft_per_1k_input_s = 0.0
speed_median_tps = 1000000000.0
speed_sigma = 0.0
gap_sigma = 0.0
verbosity = 1.0
verbosity_sigma = 0.0
answer_tokens_max = 100000
max_tokens = 100000
max_input_tokens = 1000000

[defaults.limits]
rpm = 1000000000
itpm = 1000000000
otpm = 1000000000
"""


PERF_PROFILE = (
    flat_defaults()
    + """

[pools.fast]
[pools.timed]

[models."claude-haiku-4-5"]
pool = "fast"

[models."claude-sonnet-4-5"]
pool = "timed"
ttft_median_s = 0.05
speed_median_tps = 40.0

[models."claude-3-5-haiku-20241022"]
pool = "fast"
speed_median_tps = 2000.0

[models."claude-opus-4-5"]
limits = { rpm = {rpm}, itpm = {itpm}, otpm = {otpm} }

# The simulator's own capacity (benchmarks.sim_capacity): instant, 40 tokens/s, and held open.
[models.bench-fast]

[models.bench-40tps]
ttft_median_s = 0.05
speed_median_tps = 40.0

[models.bench-hold]
ttft_median_s = 0.01
speed_median_tps = 1.0
"""
)

RATE_LIMITS = {"rpm": 6000, "itpm": 1_200_000, "otpm": 600_000}


def pct(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def cpu_of(pid: int) -> float:
    """User+system CPU seconds of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def write_dataset(path: Path, n: int, *, max_tokens: int, prompt_words: int = 12) -> Path:
    """`n` distinct short prompts (~16 input tokens) asking for `max_tokens` tokens each."""
    filler = " ".join(["word"] * max(0, prompt_words - 4))
    with path.open("w") as fh:
        for i in range(n):
            row = {"id": f"p{i}", "prompt": f"Question {i}: {filler}?", "max_tokens": max_tokens}
            fh.write(json.dumps(row) + "\n")
    return path


class SimServer:
    """The simulator in its own process with the perf profile; `requests()` is its ground truth."""

    def __init__(
        self, *, time_scale: float = 1.0, limits: dict[str, int] | None = None, profile: str | None = None
    ) -> None:
        lim = {**RATE_LIMITS, **(limits or {})}
        text = profile or PERF_PROFILE
        for key, value in lim.items():
            text = text.replace("{" + key + "}", str(value))
        fd, self.profile = tempfile.mkstemp(prefix="perf-profile-", suffix=".toml")
        os.write(fd, text.encode())
        os.close(fd)
        self.launched = SimulatorProcess.start(
            time_scale=time_scale, seed=1, profile=self.profile, startup_timeout_s=30
        )
        self.proc = self.launched.proc
        self.url = self.launched.url

    def cpu_s(self) -> float:
        return cpu_of(self.proc.pid)

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=120) as response:
            return response.read()

    def requests(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._get("/_sim/requests").splitlines() if line.strip()]

    def events_summary(self) -> dict[str, Any]:
        return json.loads(self._get("/_sim/events?summary=1"))

    def reset(self) -> None:
        req = urllib.request.Request(self.url + "/_sim/reset", data=b"{}", method="POST")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as response:
            response.read()

    def stop(self) -> None:
        self.launched.stop(15)
        Path(self.profile).unlink(missing_ok=True)

    def __enter__(self) -> SimServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TruthProcess:
    """`benchmarks.truthserver` in its own process: exactly known timing, and its ground truth."""

    def __init__(
        self, *, ttft_ms: float = 60.0, gap_ms: float = 20.0, deltas: int = 7, tokens: int = 20
    ) -> None:
        args = [
            "--ttft-ms",
            str(ttft_ms),
            "--gap-ms",
            str(gap_ms),
            "--deltas",
            str(deltas),
            "--tokens",
            str(tokens),
        ]
        self.child = procs.start("benchmarks.truthserver", args, cwd=ROOT)
        line = self.child.read_line(30).decode().split()
        self.url = f"http://127.0.0.1:{int(line[-1])}"

    def cpu_s(self) -> float:
        return cpu_of(self.child.proc.pid)

    def _call(self, method: str, path: str) -> bytes:
        request = urllib.request.Request(
            self.url + path, data=b"{}" if method == "POST" else None, method=method
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.read()

    def truth(self) -> dict[str, dict[str, Any]]:
        """call_id → its record (received_ns, first_ns, last_ns: perf_counter_ns)."""
        rows = [json.loads(line) for line in self._call("GET", "/_truth").splitlines() if line.strip()]
        return {r["call_id"]: r for r in rows if r.get("call_id")}

    def reset(self) -> None:
        self._call("POST", "/_reset")

    def stop(self) -> None:
        self.child.stop()

    def __enter__(self) -> TruthProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- the worker side


class _RssMarks:
    """Peak RSS sampled every 50 ms, plus RSS when the run passes 10 %, 50 % and 100 % of its calls."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.marks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def mark(self, name: str) -> None:
        rss = self.proc.memory_info().rss
        self.peak = max(self.peak, rss)
        self.marks[name] = round(rss / 2**20, 1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _RssAtShares:
    """An extra sink that notes RSS at 10/50/100 % of the plan (the run's own sinks come first)."""

    def __init__(self, rss: _RssMarks, planned: int) -> None:
        self.rss = rss
        self.planned = planned
        self.done = 0

    def write(self, record: Any) -> None:
        self.done += 1
        for share, name in ((0.1, "10%"), (0.5, "50%"), (1.0, "100%")):
            if self.done == max(1, int(self.planned * share)):
                self.rss.mark(name)

    def close(self) -> None:
        pass


def _instrument() -> dict[str, float]:
    """Loop-thread CPU per component of a call, summed over the run (`--scenario` with "split").

    Each wrapped function is timed with the calling thread's CPU clock; the SDK's request
    building is timed from `ClaudeClient.call` to the request hook (one task step). What no
    wrapper covers (the SDK's response objects, the request's path through httpx and
    aiohttp, asyncio's scheduling) is the rest: the loop thread's CPU less the parts.
    """
    import contextvars
    import functools

    import aiohttp.client_proto as proto

    from harness import client as hc
    from harness import limiter as hl
    from harness import progress as hp
    from harness import runner as hr
    from harness import store as hs
    from harness.events import sink as es

    totals: dict[str, float] = dict.fromkeys(
        (
            "SDK request building",
            "transport: aiohttp's HTTP parser",
            "SSE reading",
            "record",
            "limiter",
            "store",
            "event build and pipe",
            "progress view",
        ),
        0.0,
    )
    clock = time.thread_time
    began: contextvars.ContextVar[float] = contextvars.ContextVar("began", default=0.0)

    def wrap(owner: Any, name: str, key: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = clock()
            try:
                return original(*args, **kwargs)
            finally:
                totals[key] += clock() - t

        setattr(owner, name, timed)

    def wrap_async(owner: Any, name: str, key: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            t = clock()
            try:
                return await original(*args, **kwargs)
            finally:
                totals[key] += clock() - t

        setattr(owner, name, timed)

    original_call = hc.ClaudeClient.call

    @functools.wraps(original_call)
    async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        began.set(clock())
        return await original_call(self, *args, **kwargs)

    hc.ClaudeClient.call = call  # type: ignore[method-assign]
    for hook_name in ("_stamp_sent", "_stamp_sent_at_write"):
        hook = getattr(hc, hook_name)

        def stamped(request: Any, _hook: Any = hook) -> Any:
            start = began.get()
            if start:
                totals["SDK request building"] += clock() - start
                began.set(0.0)
            return _hook(request)

        setattr(hc, hook_name, stamped)
    wrap(proto.ResponseHandler, "data_received", "transport: aiohttp's HTTP parser")
    wrap(hc.StreamReader, "feed", "SSE reading")
    wrap(hc.StreamReader, "end", "SSE reading")
    wrap(hr.Runner, "_record", "record")
    wrap_async(hl.PoolLimiter, "acquire", "limiter")
    wrap(hl.PoolLimiter, "settle", "limiter")
    wrap(hl.PoolLimiter, "observe_headers", "limiter")
    wrap(hs.RunStore, "write", "store")
    wrap(es.EventSink, "write", "event build and pipe")
    wrap(es.EventSink, "_flush", "event build and pipe")
    wrap(hp.ProgressSink, "write", "progress view")
    return totals


def _planned(cfg: Any) -> int:
    """The number of calls the run will make (for the RSS marks' shares)."""
    from harness.dataset import load_cases

    cases = len(load_cases(cfg.dataset).cases) * len(cfg.model_names) * cfg.repeats
    return min(cases, cfg.max_calls) if cfg.max_calls else cases


def _worker(scenario: dict[str, Any]) -> dict[str, Any]:
    """Run one harness run in this process; return its figures (CPU, wall, records summary)."""
    t_start = time.perf_counter()
    rss = _RssMarks()
    from harness.bench import execute_run
    from harness.config import build_config

    cli = dict(scenario["cli"])
    for key in ("dataset", "results_dir"):
        if key in cli:
            cli[key] = Path(cli[key])
    cfg = build_config(cli, env={})
    cpu0 = time.process_time()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    extra = [_RssAtShares(rss, _planned(cfg))] if scenario.get("rss_marks") else []
    split = _instrument() if scenario.get("split") else None
    result = loops.run(execute_run(cfg, extra_sinks=extra), cfg.event_loop)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss.stop()
    import polars as pl

    from harness.rundir import RunDir

    calls = RunDir.read(result.run_dir).load_calls().collect()
    ok = calls.filter(pl.col("status") == "ok")
    started = calls["started_at"].drop_nulls()
    finished = calls["finished_at"].drop_nulls()
    span = (finished.max() - started.min()).total_seconds() if len(started) and len(finished) else 0.0  # type: ignore[operator]
    out: dict[str, Any] = {
        "calls": calls.height,
        "ok": ok.height,
        "errors": calls.filter(pl.col("status") == "error").height,
        "error_kinds": dict(
            calls.filter(pl.col("status") == "error")["error_kind"].value_counts().iter_rows()
        ),
        "cancelled": calls.filter(pl.col("status") == "cancelled").height,
        "attempts_total": int(calls["attempts"].sum() or 0),
        "rate_limited_calls": calls.filter(pl.col("attempts") > 1).height,
        "output_tokens": int(calls["output_tokens"].sum() or 0),
        "input_tokens": int(calls["input_tokens"].sum() or 0),
        "span_s": span,
        "calls_per_s": calls.height / span if span > 0 else 0.0,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_user_s": ru1.ru_utime - ru0.ru_utime,
        "cpu_sys_s": ru1.ru_stime - ru0.ru_stime,
        # Worker processes and the PostHog delivery child, once they have exited (both are waited for).
        "children_cpu_s": kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime,
        "workers": max(1, len(result.outcome.workers)),
        # During the run (start-up excluded): the worker processes' and the PostHog delivery child's CPU.
        "workers_cpu_s": sum(w.get("cpu_s") or 0.0 for w in result.outcome.workers),
        "events_cpu_s": float(result.delivery.get("cpu_s") or 0.0),
        "outcome": {
            "finished": result.outcome.finished,
            "stopped_by": result.outcome.stopped_by,
            "loop_lag": result.outcome.loop_lag,
            "release_lateness": result.outcome.release_lateness,
            "guard": result.outcome.guard,
            "saturated": result.outcome.saturated,
        },
        "health": RunDir.read(result.run_dir).manifest.get("health", {}),
        "events": {
            k: result.delivery.get(k) for k in ("handed", "delivered", "dropped", "failed", "pending")
        },
        "peak_rss_mb": round(rss.peak / 2**20, 1),
        "rss_marks_mb": rss.marks,
        "process_s": time.perf_counter() - t_start,
        "run_dir": str(result.run_dir),
    }
    if split is not None:
        loop_cpu = float(result.outcome.guard.get("loop_cpu_s") or 0.0)
        out["split_s"] = {
            **split,
            "rest: SDK response objects, request path, asyncio": loop_cpu - sum(split.values()),
        }
        out["loop_cpu_s"] = loop_cpu
    if scenario.get("per_call"):
        sel = calls.select(
            "call_id",
            "ttft_s",
            "latency_s",
            "started_at",
            "scheduled_at",
            "status",
            "client_delay_first_token_s",
            "client_delay_last_byte_s",
        )
        out["per_call"] = {
            "call_id": sel["call_id"].to_list(),
            "ttft_s": sel["ttft_s"].to_list(),
            "latency_s": sel["latency_s"].to_list(),
            "delay_first_s": sel["client_delay_first_token_s"].to_list(),
            "delay_last_s": sel["client_delay_last_byte_s"].to_list(),
            "started_s": _seconds_since(sel["started_at"].to_list(), started.min()),
            "started_unix": [t.timestamp() if t is not None else None for t in sel["started_at"].to_list()],
            "scheduled_s": _seconds_since(sel["scheduled_at"].to_list(), started.min()),
        }
    return out


def _seconds_since(moments: list[Any], origin: Any) -> list[float | None]:
    return [(t - origin).total_seconds() if t is not None else None for t in moments]


def run_scenario(scenario: dict[str, Any], timeout_s: float = 600.0) -> dict[str, Any]:
    """Run `scenario` (a dict with `cli` for build_config) in a fresh worker process; its figures."""
    env = procs.environment()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(scenario, fh, default=str)
        path = fh.name
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.perfkit", "--scenario", path],
            capture_output=True,
            cwd=ROOT,
            env=env,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"harness worker failed:\n{done.stderr.decode(errors='replace')[-3000:]}")
        return json.loads(
            Path(path + ".out").read_text()
        )  # a file: a long result never meets a pipe's limits
    finally:
        Path(path).unlink(missing_ok=True)
        Path(path + ".out").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perfkit")
    parser.add_argument("--scenario", required=True, help="internal: a JSON scenario file")
    args = parser.parse_args(argv)
    scenario = json.loads(Path(args.scenario).read_text())
    Path(args.scenario + ".out").write_text(json.dumps(_worker(scenario), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
