"""`harness history`: nightly figures per arm, drift against each arm's own history, insufficient history.

The end-to-end series runs ten short nights against the real simulator (two models, 24
cases, time scale 0.25: about two seconds a night); on the last night the
simulator's profile cuts one model's output speed to about a quarter. The rule must flag
that model's latency and nothing else. The other tests use synthetic run directories.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from harness import loops
from harness.bench import execute_run
from harness.cli import app
from harness.config import build_config
from harness.errors import ConfigError
from harness.report.drift import DRIFT, INSUFFICIENT, OK, DriftRule, judge_drift
from harness.report.history import collect, write_history
from harness.simulator.profiles import DEFAULT_PROFILE_PATH
from tests.simproc import start_simulator
from tests.synthetic import ModelSpec, synthetic_calls, write_run

MODELS = "claude-haiku-4-5,claude-sonnet-4-6"
SLOWED = "claude-haiku-4-5"
NIGHTS = 10
ENV = {"ANTHROPIC_API_KEY": "", "COLUMNS": "250"}


def _dataset(path: Path) -> Path:
    """16 open-ended cases (long answers: output speed shows in latency) and 8 graded ones."""
    rows = [
        {"id": f"story-{i:02d}", "prompt": f"Tell a short story about lighthouse {i}.", "max_tokens": 200}
        for i in range(16)
    ]
    rows += [
        {
            "id": f"qa-{i:02d}",
            "prompt": f"What is the capital of Canada? ({i})",
            "max_tokens": 64,
            "expected": {"contains": "Ottawa"},
        }
        for i in range(8)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _slow_profile(path: Path) -> Path:
    """The shipped simulator profile with Claude Haiku 4.5 streaming at 40 tokens/s instead of 150."""
    text = DEFAULT_PROFILE_PATH.read_text()
    table = '[models."claude-haiku-4-5-20251001"]\n'
    assert table in text
    path.write_text(text.replace(table, table + "speed_median_tps = 40.0\n"))
    return path


def _night(sim_url: str, dataset: Path, results: Path, night: int) -> None:
    cfg = build_config(
        {
            "dataset": dataset,
            "models": MODELS,
            "results_dir": results,
            "base_url": sim_url,
            "target": "simulator",
            "posthog_enabled": False,
            "report": False,
            "progress": "off",
            "concurrency": 24,
            "seed": night,
            "run_id": f"night-{night:02d}",
        },
        env={},
    )
    loops.run(execute_run(cfg), cfg.event_loop)


@pytest.fixture(scope="module")
def nightly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten nights in one results directory; the last one against a simulator whose Haiku is slow."""
    root = tmp_path_factory.mktemp("nightly")
    dataset, results = _dataset(root / "nightly.jsonl"), root / "results"
    with start_simulator("--time-scale", "0.25", "--seed", "3") as sim:
        for night in range(NIGHTS - 1):
            _night(sim.url, dataset, results, night)
    slow = _slow_profile(root / "slow.toml")
    with start_simulator("--time-scale", "0.25", "--seed", "3", "--profile", str(slow)) as sim:
        _night(sim.url, dataset, results, NIGHTS - 1)
    return results


@pytest.mark.slow
def test_a_model_slowed_on_the_last_night_drifts_on_its_latency_only(nightly: Path, tmp_path: Path) -> None:
    result = write_history([nightly], tmp_path / "history")
    v = result.verdicts
    assert set(v.get_column("run_id")) == {f"night-{NIGHTS - 1:02d}"}
    drifting = {(r["arm"], r["metric"]) for r in v.iter_rows(named=True) if r["verdict"] == DRIFT}
    assert (SLOWED, "latency_p50_s") in drifting, result.markdown
    assert drifting <= {(SLOWED, "latency_p50_s"), (SLOWED, "latency_p95_s")}, result.markdown
    others = v.filter(~pl.struct("arm", "metric").is_in([{"arm": a, "metric": m} for a, m in drifting]))
    assert set(others.get_column("verdict")) == {OK}, result.markdown
    assert set(v.filter(pl.col("verdict") == DRIFT).get_column("direction")) == {"worse"}
    assert {"pass_rate", "cost_per_pass_usd", "ttft_p95_s", "error_rate"} <= set(v.get_column("metric"))
    assert result.drift and all(name.startswith(SLOWED) for name in result.drift)

    history = pl.read_parquet(tmp_path / "history" / "history.parquet")
    assert history.height == NIGHTS * 2 and history.get_column("run_id").n_unique() == NIGHTS
    assert history.get_column("series").n_unique() == 1
    for column in (
        "run_start", "dataset_sha256", "target", "arm", "calls", "error_rate", "ttft_p50_s", "ttft_p95_s",
        "first_text_p50_s", "first_text_p50_lo_s", "latency_p50_s", "latency_p50_lo_s",
        "cost_per_1k_calls_usd", "cost_per_pass_usd", "pass_rate", "pass_rate_lo", "harness_version",
        "price_version", "price_library_version", "price_effective_date", "concurrency", "client_cpus", "event_loop",
    ):  # fmt: skip
        assert column in history.columns and history.get_column(column).null_count() == 0, column
    assert "latency_p95_hi_s" in history.columns  # null here: 24 calls cannot bound a p95
    md = result.history_md.read_text()
    assert "## Methodology" in md and "## Last 10 night(s)" in md and "**DRIFT (worse)**" in md
    assert md.count(f"| {SLOWED} |") >= NIGHTS  # the trend table: one row per night and arm
    assert (tmp_path / "history" / "trend_latency_p50_s.png").stat().st_size > 5000


@pytest.mark.slow
def test_fail_on_drift_exits_1_and_reports_without_it(nightly: Path, tmp_path: Path) -> None:
    out = tmp_path / "h"
    failing = CliRunner().invoke(
        app, ["history", str(nightly), "--out", str(out), "--fail-on-drift"], env=ENV
    )
    assert failing.exit_code == 1, failing.output
    assert "Drift for the worse" in failing.output
    quiet = CliRunner().invoke(app, ["history", str(nightly), "--out", str(out)], env=ENV)
    assert quiet.exit_code == 0, quiet.output
    # The same nights judged with a generous rule: no drift.
    lenient = ["--median-pct", "400", "--tail-pct", "400", "--fail-on-drift"]
    calm = CliRunner().invoke(app, ["history", str(nightly), "--out", str(out), *lenient], env=ENV)
    assert calm.exit_code == 0, calm.output


def _series(
    root: Path, nights: int, *, sha: str = "sha-1", slow_last: float = 1.0, start_night: int = 0
) -> Path:
    for night in range(start_night, start_night + nights):
        factor = slow_last if night == start_night + nights - 1 else 1.0
        models = [ModelSpec("m-fast", median_s=0.5 * factor), ModelSpec("m-slow", median_s=1.0)]
        start = datetime(2026, 11, 1, 3, 17, tzinfo=UTC) + timedelta(days=night)
        frame = synthetic_calls(models, cases=60, seed=night, run_id=f"{sha}-n{night:02d}", start=start)
        write_run(root / f"{sha}-n{night:02d}", frame, dataset_sha=sha)
    return root


def test_two_runs_are_insufficient_history_and_fail_on_drift_exits_3(tmp_path: Path) -> None:
    results = _series(tmp_path / "results", 2)
    out = tmp_path / "out"
    result = write_history([results], out)
    assert set(result.verdicts.get_column("verdict")) == {INSUFFICIENT}
    assert "1 earlier run(s) of this series; needs 5" in result.markdown
    assert result.markdown.count("Insufficient history") == 1
    code = CliRunner().invoke(app, ["history", str(results), "--out", str(out), "--fail-on-drift"], env=ENV)
    assert code.exit_code == 3, code.output
    assert CliRunner().invoke(app, ["history", str(results), "--out", str(out)], env=ENV).exit_code == 0


def test_runs_of_another_dataset_never_join_a_series(tmp_path: Path) -> None:
    results = _series(tmp_path / "results", 8, sha="sha-a")
    _series(results, 1, sha="sha-b", start_night=8, slow_last=3.0)  # tonight: another dataset
    result = write_history([results], tmp_path / "out")
    assert set(result.verdicts.get_column("verdict")) == {INSUFFICIENT}
    assert "0 earlier run(s) of this series" in result.markdown
    assert "Not shown (another dataset or target, never mixed): dataset sha-a" in result.markdown
    assert result.history.get_column("series").n_unique() == 2


def test_a_rolling_history_appends_tonight_and_keeps_the_newest(tmp_path: Path) -> None:
    results = _series(tmp_path / "results", 7, slow_last=2.0)
    runs = sorted(results.iterdir())
    first = write_history(runs[:-1], tmp_path / "previous")  # last night's artifact
    assert first.history.get_column("run_id").n_unique() == 6
    rolled = write_history([tmp_path / "previous", runs[-1]], tmp_path / "history", keep=6)
    ids = rolled.history.sort("run_start").get_column("run_id").unique(maintain_order=True).to_list()
    assert ids == [r.name for r in runs[-6:]]
    assert ("m-fast", "latency_p50_s") in {
        (r["arm"], r["metric"]) for r in rolled.verdicts.iter_rows(named=True) if r["verdict"] == DRIFT
    }
    # A run given again is read afresh; its stored rows are replaced, never doubled.
    again, _ = collect([tmp_path / "history", runs[-1]])
    assert again.height == rolled.history.height


def _frame(values: list[float], metric: str = "latency_p50_s", **tonight: float) -> pl.DataFrame:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {"run_id": f"r{i:02d}", "run_start": start + timedelta(days=i), "series": "s", "arm": "a", metric: v}
        for i, v in enumerate(values)
    ]
    rows[-1].update(tonight)
    return pl.DataFrame(rows)


def test_the_rule_on_its_own() -> None:
    rule = DriftRule()
    steady = [1.00, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97]
    ok = judge_drift(_frame([*steady, 1.05]), rule).row(0, named=True)
    assert ok["verdict"] == OK and ok["history_n"] == 7 and math.isclose(ok["median"], 1.0, rel_tol=1e-9)
    slow = judge_drift(_frame([*steady, 1.6]), rule).row(0, named=True)
    assert slow["verdict"] == DRIFT and slow["direction"] == "worse" and slow["z"] > 3.5
    fast = judge_drift(_frame([*steady, 0.6]), rule).row(0, named=True)
    assert fast["verdict"] == DRIFT and fast["direction"] == "better"
    # Beyond the z threshold but below the practical minimum (10 % for a p50): ok.
    tight = [1.000, 1.001, 0.999, 1.000, 1.001, 0.999]
    assert judge_drift(_frame([*tight, 1.05]), rule).row(0, named=True)["verdict"] == OK
    # One wild night in the history does not hide a drift from the median.
    wild = [1.00, 1.02, 0.98, 1.01, 9.0, 0.99, 1.03]
    assert judge_drift(_frame([*wild, 1.6]), rule).row(0, named=True)["verdict"] == DRIFT
    # Only the last `window` earlier runs count.
    long = [5.0] * 10 + steady
    windowed = judge_drift(_frame([*long, 1.05]), DriftRule(window=7)).row(0, named=True)
    assert windowed["history_n"] == 7 and windowed["verdict"] == OK
    assert judge_drift(_frame([1.0, 1.0, 1.5]), rule).row(0, named=True)["verdict"] == INSUFFICIENT
    # A timing drift on a night whose event loop lagged by a quarter of the change says so.
    lagged = judge_drift(_frame([*steady, 1.6], loop_lag_max_ms=250.0), rule).row(0, named=True)
    assert lagged["verdict"] == DRIFT and "event loop lagged up to 250 ms" in lagged["note"]
    calm = judge_drift(_frame([*steady, 1.6], loop_lag_max_ms=5.0), rule).row(0, named=True)
    assert calm["verdict"] == DRIFT and calm["note"] == ""


def test_a_rate_is_never_judged_finer_than_its_binomial_noise() -> None:
    # 100 % pass every night (spread 0): one failed case of 8 is 12.5 points, within tonight's noise.
    rates = _frame([1.0] * 8 + [0.875], "pass_rate", pass_rate_lo=0.53, pass_rate_hi=0.98)
    row = judge_drift(rates, DriftRule()).row(0, named=True)
    assert row["verdict"] == OK and abs(row["z"]) < 3.5
    collapse = _frame([1.0] * 8 + [0.25], "pass_rate", pass_rate_lo=0.07, pass_rate_hi=0.59)
    dropped = judge_drift(collapse, DriftRule()).row(0, named=True)
    assert dropped["verdict"] == DRIFT and dropped["direction"] == "worse"


def test_bad_rule_parameters_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--min-history"):
        DriftRule(window=3, min_history=5)
    results = _series(tmp_path / "results", 2)
    bad = CliRunner().invoke(app, ["history", str(results), "--z", "0"], env=ENV)
    assert bad.exit_code == 2 and "--z" in bad.output
    missing = CliRunner().invoke(app, ["history", str(tmp_path / "nowhere")], env=ENV)
    assert missing.exit_code == 2 and "no such run directory" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = CliRunner().invoke(app, ["history", str(empty), "--out", str(tmp_path / "o")], env=ENV)
    assert nothing.exit_code == 2 and "no run with call records" in nothing.output
