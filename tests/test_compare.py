"""`compare_runs`: exit 1 on an injected regression, 0 on a re-run of the same conditions."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from harness.errors import HarnessError
from harness.report import Thresholds, compare_runs
from tests.synthetic import ModelSpec, synthetic_calls, write_run

MODELS = [ModelSpec("m-1", median_s=0.8), ModelSpec("m-2", median_s=1.2, error_rate=0.01)]


def _run(tmp: Path, name: str, models: list[ModelSpec], seed: int, **kw: object) -> Path:
    return write_run(tmp / name, synthetic_calls(models, cases=250, repeats=2, seed=seed, run_id=name, **kw))


def test_rerun_of_same_conditions_exits_0(tmp_path: Path) -> None:
    base = _run(tmp_path, "base", MODELS, seed=11)
    cur = _run(tmp_path, "cur", MODELS, seed=12)
    result = compare_runs(base, cur)
    assert result.exit_code == 0, result.markdown
    assert "No regression." in result.markdown
    assert (cur / "compare.md").read_text() == result.markdown
    table = pl.read_parquet(cur / "compare.parquet")
    assert table.height == 2 * 7 and not table["regression"].any()


def test_injected_regression_exits_1(tmp_path: Path) -> None:
    base = _run(tmp_path, "base", MODELS, seed=11)
    slower = [ModelSpec("m-1", median_s=0.8 * 1.4), MODELS[1]]
    cur = _run(tmp_path, "cur", slower, seed=12)
    out = tmp_path / "out"
    result = compare_runs(base, cur, out_dir=out)
    assert result.exit_code == 1
    assert {"m-1: p50 latency", "m-1: p95 latency", "m-1: mean cost per call"} <= set(result.regressions)
    assert not any(r.startswith("m-2") for r in result.regressions)
    assert "REGRESSION" in (out / "compare.md").read_text()
    lenient = compare_runs(base, cur, thresholds=Thresholds(latency_pct=80.0, cost_pct=80.0), out_dir=out)
    assert lenient.exit_code == 0


def test_error_rate_and_pass_rate_regressions(tmp_path: Path) -> None:
    base = _run(tmp_path, "base", [ModelSpec("m", pass_prob=0.9)], seed=1)
    cur = _run(tmp_path, "cur", [ModelSpec("m", pass_prob=0.7, error_rate=0.15)], seed=2)
    result = compare_runs(base, cur)
    assert set(result.regressions) >= {"m: error rate", "m: pass rate"}


def test_missing_model_and_other_dataset_are_reported(tmp_path: Path) -> None:
    base = _run(tmp_path, "base", MODELS, seed=11)
    cur = write_run(
        tmp_path / "cur", synthetic_calls(MODELS[:1], cases=250, repeats=2, seed=3), dataset_sha="other"
    )
    result = compare_runs(base, cur)
    assert result.exit_code == 0
    assert any("m-2 is in the baseline only" in w for w in result.warnings)
    assert "different datasets" in result.markdown


def test_unusable_input_raises(tmp_path: Path) -> None:
    base = _run(tmp_path, "base", MODELS, seed=11)
    with pytest.raises(HarnessError, match=r"current run: .*nope: not a run directory"):
        compare_runs(base, tmp_path / "nope")
    other = _run(tmp_path, "other", [ModelSpec("zzz")], seed=1)
    with pytest.raises(HarnessError, match="no model in common"):
        compare_runs(base, other)
    empty = tmp_path / "empty"
    (empty / "parts").mkdir(parents=True)
    with pytest.raises(HarnessError, match="no call records"):
        compare_runs(base, empty)


def test_a_quality_drop_is_a_regression_paired_by_case(tmp_path: Path) -> None:
    """Same dataset (write_run's sha), m-1 answers 15 points worse: pass rate and score regress, paired."""
    graded = [ModelSpec("m-1", median_s=0.8, pass_prob=0.9), ModelSpec("m-2", median_s=1.2, pass_prob=0.9)]
    worse = [ModelSpec("m-1", median_s=0.8, pass_prob=0.75), graded[1]]

    def scored(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(pl.col("passed").cast(pl.Float64).alias("score"))

    base = write_run(
        tmp_path / "b", scored(synthetic_calls(graded, cases=250, repeats=2, seed=3, run_id="b"))
    )
    cur = write_run(tmp_path / "c", scored(synthetic_calls(worse, cases=250, repeats=2, seed=4, run_id="c")))
    result = compare_runs(base, cur, out_dir=tmp_path / "out")
    assert result.exit_code == 1
    assert {"m-1: pass rate", "m-1: mean score"} <= set(result.regressions)
    assert not any(r.startswith("m-2") for r in result.regressions)
    row = result.table.filter((pl.col("arm") == "m-1") & (pl.col("metric") == "pass rate")).row(0, named=True)
    assert row["note"] == "paired over 250 cases" and row["change_hi"] < 0
