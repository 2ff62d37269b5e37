"""The methodology card (report, compare, history) lists every field; the manifest and rows carry dated prices;
`harness report --reprice` shows the stored costs beside today's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from harness import loops
from harness.bench import execute_run
from harness.cli import app
from harness.config import build_config
from harness.pricing import PriceTable
from harness.report import compare_runs, write_report
from harness.report.history import write_history
from harness.report.methodology import CARD_FIELDS, NOT_RECORDED, methodology
from harness.rundir import RunDir
from tests.simproc import SimProc
from tests.synthetic import ModelSpec, synthetic_calls, write_run

ENV = {"ANTHROPIC_API_KEY": "", "COLUMNS": "250"}


def _card_rows(md: str) -> dict[str, list[str]]:
    """The methodology table of a markdown page: field → its value cells."""
    section = md.split("## Methodology", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and cells[0] in CARD_FIELDS:
            rows[cells[0]] = cells[1:]
    return rows


def _simulated_run(sim: SimProc, tmp_path: Path, run_id: str) -> Path:
    data = tmp_path / "cases.jsonl"
    rows = [
        {"id": f"c{i}", "prompt": "What is the capital of Canada?" + " Please." * i, "max_tokens": 48 + i,
         "expected": {"contains": "Ottawa"}}
        for i in range(12)
    ]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = build_config(
        {
            "dataset": data,
            "models": "claude-haiku-4-5,claude-sonnet-4-6",
            "results_dir": tmp_path / "results",
            "base_url": sim.url,
            "target": "simulator",
            "posthog_enabled": False,
            "progress": "off",
            "concurrency": 4,
            "run_id": run_id,
        },
        env={},
    )
    return loops.run(execute_run(cfg), cfg.event_loop).run_dir


def test_a_run_records_its_methodology_and_every_page_lists_every_field(
    simulator: SimProc, tmp_path: Path
) -> None:
    first = _simulated_run(simulator, tmp_path, "run-a")
    second = _simulated_run(simulator, tmp_path, "run-b")
    manifest = RunDir.read(first).manifest

    block = manifest["methodology"]
    assert block["load"]["mode"] == "closed loop" and block["load"]["concurrency"] == 4
    assert block["load"]["repeats"] == 1 and block["load"]["rate_per_s"] is None
    client = block["client"]
    assert client["cpus"] >= 1 and client["python"] and client["sdk"].startswith("anthropic ")
    assert client["harness"] and client["event_loop"] in ("uvloop", "asyncio")
    dataset = block["dataset"]
    assert dataset["cases"] == 12 and dataset["prompt_chars"]["max"] > dataset["prompt_chars"]["p50"] > 0
    assert dataset["max_tokens"] == {"n": 12, "p50": 53.5, "p95": 58.45, "max": 59.0}
    prices = manifest["prices"]
    assert (
        prices["label"]
        == f"genai-prices {prices['version']} (bundled data; effective {prices['resolved_at'][:10]})"
    )

    calls = RunDir.read(first).load_calls().collect()
    assert calls.get_column("price_version").unique().to_list() == [prices["label"]]

    report = (first / "report.md").read_text()
    assert report.index("## Methodology") < report.index("**Recommended")
    card = _card_rows(report)
    assert list(card) == list(CARD_FIELDS)
    assert all(cells[0] and cells[0] != NOT_RECORDED for cells in card.values()), card
    assert "closed loop, concurrency 4" in card["Load"][0] and "sha256 " in card["Dataset"][0]
    assert "event-loop lag" in card["Measurement health"][0] and prices["version"] in card["Prices"][0]
    assert re.search(r"\d\d:\d\d UTC, [A-Z][a-z]+day", card["Time of day"][0])
    html = (first / "report.html").read_text()
    assert "<table class='card'>" in html and all(f"<td>{field}</td>" in html for field in CARD_FIELDS)

    compared = compare_runs(first, second, out_dir=tmp_path / "cmp")
    both = _card_rows(compared.markdown)
    assert list(both) == list(CARD_FIELDS) and all(len(cells) == 2 for cells in both.values())

    history = write_history([tmp_path / "results"], tmp_path / "history")
    assert list(_card_rows(history.markdown)) == list(CARD_FIELDS)
    row = history.history.row(0, named=True)
    for fact in ("dataset_path", "dataset_sha256", "prompt_chars_p50", "output_tokens_p95", "load_mode",
                 "concurrency", "window_start", "window_end", "time_of_day_utc", "target", "target_host",
                 "client_cpus", "python_version", "sdk_version", "harness_version", "event_loop",
                 "loop_lag_p99_ms", "price_source", "price_version", "price_library_version", "price_effective_date"):  # fmt: skip
        assert row[fact] is not None, fact


def test_a_run_recorded_before_the_card_still_lists_every_field() -> None:
    m = methodology({"dataset": {"path": "old.jsonl", "sha256": "ab" * 32}})
    assert [f for f, _ in m.card] == list(CARD_FIELDS)
    text = dict(m.card)
    assert text["Dataset"].startswith("old.jsonl · sha256 abab") and text["Prices"] == NOT_RECORDED
    assert text["Load"] == NOT_RECORDED and text["Measurement health"] == NOT_RECORDED
    # A manifest from before the methodology block: the load comes from its config.
    older = methodology({"config": {"concurrency": 8, "rate": None, "repeats": 2, "arrival": "closed"}})
    assert dict(older.card)["Load"] == "closed loop, concurrency 8; 2 repeat(s) per case"
    # The health figures the run's end stored (report/health.py), and the guard when it acted.
    health = methodology({
        "loop_lag": {"samples": 10, "p50_ms": 0.1, "p99_ms": 2.0, "max_ms": 3.0},
        "health": {"self_delay": {"share_over_5ms": 0.125, "share_over_20ms": 0.02,
                                  "first_token_ms": {"p50": 1.0, "p99": 24.5}},
                   "process": {"cpu_per_call_ms": 1.25}},
        "guard": {"changed": True, "asked": 64, "final": 5},
    })  # fmt: skip
    text = dict(health.card)["Measurement health"]
    assert (
        "self-delay over 5 ms in 12.5 % of calls (over 20 ms 2.0 %), p99 24.5 ms at the first token" in text
    )
    assert "harness CPU 1.25 ms per call" in text and "concurrency 64 asked, 5 at the end" in text
    assert health.facts["self_delay_share_5ms"] == 0.125 and health.facts["guard_final"] == 5
    calm = methodology({"guard": {"changed": False, "asked": 8, "final": 8}})
    assert "timing guard" not in dict(calm.card)["Measurement health"]


MODELS = ["claude-haiku-4-5", "claude-sonnet-4-6"]


def _old_priced_run(tmp_path: Path) -> Path:
    """A run whose stored costs came from another (older) price table: double today's."""
    frame = synthetic_calls([ModelSpec(m) for m in MODELS], cases=40, seed=3)
    today = PriceTable.resolve(MODELS)
    totals = [
        today.cost(m, i, o).total_usd * 2
        for m, i, o in frame.select("model", "input_tokens", "output_tokens").iter_rows()
    ]
    frame = frame.with_columns(
        pl.Series("total_cost_usd", totals),
        pl.Series("output_cost_usd", totals),
        pl.lit(0.0).alias("input_cost_usd"),
        pl.lit("genai-prices 0.0.1 (bundled data; effective 2025-02-03)").alias("price_version"),
    )
    run = write_run(tmp_path / "old", frame)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["prices"] = {"library": "genai-prices", "version": "0.0.1", "resolved_at": "2025-02-03T03:17:00+00:00",
                          "data_timestamp": None, "models": {}}  # fmt: skip
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_an_old_run_keeps_its_stored_costs_and_reprice_shows_todays(tmp_path: Path) -> None:
    run = _old_priced_run(tmp_path)
    stored = write_report(run)
    md = stored.report_md.read_text()
    assert "Costs repriced" not in md
    prices = _card_rows(md)["Prices"][0]
    assert (
        prices
        == "genai-prices 0.0.1 (the data bundled with it), effective 2025-02-03; the costs shown are the run's own"
    )

    result = write_report(run, reprice=True)
    assert result.summary.equals(stored.summary)  # every other table keeps the stored costs
    assert result.repriced is not None
    by_arm = {r["arm"]: r for r in result.repriced.iter_rows(named=True)}
    for r in result.summary.iter_rows(named=True):
        assert by_arm[r["arm"]]["total_cost_usd"] == pytest.approx(r["total_cost_usd"] / 2, rel=1e-9)
    md = result.report_md.read_text()
    table = md.split("## Costs repriced with today's price table", 1)[1].split("\n## ", 1)[0]
    assert table.count("| -50.0% |") == 2 * len(MODELS)
    assert "priced with genai-prices 0.0.1 (bundled data; effective 2025-02-03)" in table
    assert f"priced with {PriceTable.resolve(MODELS).version_label}" in table
    assert pl.read_parquet(run / "summary-repriced.parquet").height == len(MODELS)

    cli = CliRunner().invoke(app, ["report", str(run), "--reprice"], env=ENV)
    assert cli.exit_code == 0, cli.output
