"""Prompt caching end to end against the simulator: the warm-up, fan-out, the minimum, savings, `off`."""

from __future__ import annotations

import json
from pathlib import Path

import genai_prices
import polars as pl
import pytest

from harness import loops
from harness.bench import execute_run
from harness.config import build_config
from harness.rundir import RunDir
from tests.simproc import SimProc, start_simulator

DOC = " ".join(
    f"Paragraph {i}: the northern line carried {i * 37 % 997} riders on day {i}." for i in range(400)
)


def dataset(tmp_path: Path, n: int, doc: str = DOC) -> Path:
    rows = [
        {
            "id": f"q{i:02d}",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": doc}, {"type": "text", "text": f"Question {i}?"}],
                }
            ],
            "max_tokens": 40,
        }
        for i in range(n)
    ]
    path = tmp_path / "cache.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(sim: SimProc, tmp_path: Path, data: Path, **cli) -> pl.DataFrame:
    cfg = build_config(
        {
            "dataset": data,
            "models": "claude-sonnet-4-6",
            "results_dir": tmp_path / "results",
            "base_url": sim.url,
            "target": "simulator",
            "posthog_enabled": False,
            "report": False,
            "progress": "off",
            **cli,
        },
        env={},
    )
    result = loops.run(execute_run(cfg), cfg.event_loop)
    return RunDir.read(result.run_dir).load_calls().collect()


def activity(sim: SimProc) -> tuple[int, int]:
    truth = [r for r in sim.requests() if r.get("call_id")]
    writes = sum(
        1 for r in truth if (r.get("cache_write_5m_tokens") or 0) + (r.get("cache_write_1h_tokens") or 0)
    )
    reads = sum(1 for r in truth if r.get("cache_read_tokens"))
    return writes, reads


def test_the_warm_up_turns_fifty_writes_into_one_write_and_49_reads(
    simulator: SimProc, tmp_path: Path
) -> None:
    calls = run(simulator, tmp_path, dataset(tmp_path, 50), cache="5m", concurrency=50)
    assert activity(simulator) == (1, 49), "ground truth: the first call wrote, every other read"
    assert calls["cache_eligible"].all() and calls["cache_hit"].sum() == 49
    assert (calls["cache_creation_input_tokens"] > 0).sum() == 1


def test_without_the_warm_up_a_simultaneous_fan_out_pays_many_writes(tmp_path: Path) -> None:
    # At a realistic speed (first tokens after ~0.3 s) 50 calls started at once all miss the entry.
    with start_simulator("--time-scale", "0.5", "--seed", "3") as sim:
        data = dataset(tmp_path, 50)
        calls = run(sim, tmp_path, data, cache="5m", cache_warmup=False, concurrency=50, ramp_up_s=0)
        writes, _reads = activity(sim)
    assert writes > 5, "calls sent before the first answer began each wrote the prefix"
    assert (calls["cache_creation_input_tokens"] > 0).sum() == writes


def test_a_prefix_below_the_minimum_is_flagged_and_never_counted_as_a_miss(
    simulator: SimProc, tmp_path: Path
) -> None:
    calls = run(simulator, tmp_path, dataset(tmp_path, 6, doc="A short shared note."), cache="5m")
    assert not calls["cache_eligible"].any(), "flagged before the first call (count_tokens)"
    assert activity(simulator) == (0, 0)
    assert (calls["cache_savings_usd"] == 0).all()


def test_savings_equal_an_independent_computation(simulator: SimProc, tmp_path: Path) -> None:
    calls = run(simulator, tmp_path, dataset(tmp_path, 10), cache="5m", concurrency=1)
    for row in calls.iter_rows(named=True):
        whole = row["input_tokens"] + row["cache_creation_input_tokens"] + row["cache_read_input_tokens"]
        plain = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=whole, output_tokens=row["output_tokens"]),
            row["model"],
            provider_id="anthropic",
        ).total_price
        assert row["uncached_cost_usd"] == pytest.approx(float(plain))
        assert row["cache_savings_usd"] == pytest.approx(float(plain) - row["total_cost_usd"])
    assert calls["cache_savings_usd"].sum() > 0


def test_off_strips_every_breakpoint(simulator: SimProc, tmp_path: Path) -> None:
    marked = tmp_path / "marked.jsonl"
    rows = [json.loads(line) for line in dataset(tmp_path, 8).read_text().splitlines()]
    for row in rows:
        row["messages"][0]["content"][0]["cache_control"] = {"type": "ephemeral"}
    marked.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls = run(simulator, tmp_path, marked, cache="off")
    assert activity(simulator) == (0, 0)
    assert calls["cache_eligible"].is_null().all() and calls["cache_hit"].is_null().all()
