"""`harness compare` exits 3 when there is not enough data to decide, apart from 0, 1 and 2."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from harness.cli import app
from harness.report import Thresholds, compare_runs
from tests.synthetic import ModelSpec, synthetic_calls, write_run

ENV = {"ANTHROPIC_API_KEY": "", "COLUMNS": "250"}
MODELS = [ModelSpec("m-1", median_s=0.8), ModelSpec("m-2", median_s=1.2)]


def _run(tmp: Path, name: str, cases: int, seed: int, models: list[ModelSpec] = MODELS) -> Path:
    return write_run(tmp / name, synthetic_calls(models, cases=cases, seed=seed, run_id=name))


def test_a_run_of_five_cases_is_not_enough_to_decide(tmp_path: Path) -> None:
    base, cur = _run(tmp_path, "base", 5, 1), _run(tmp_path, "cur", 5, 2)
    result = compare_runs(base, cur)
    assert result.exit_code == 3, result.markdown
    assert not result.regressions and result.undecided
    assert "**Not enough data to decide**" in result.markdown
    assert "not enough data: 5 vs 5 samples (needs ≥ 10)" in result.markdown
    assert "not enough data: 5 paired cases (needs ≥ 10)" in result.markdown  # quality, same dataset
    table = pl.read_parquet(cur / "compare.parquet")
    measured = table.filter(pl.col("current").is_not_null())  # the mean score is not measured here
    assert measured.height == 12 and not measured["decided"].any() and not table["regression"].any()
    cli = CliRunner().invoke(app, ["compare", str(base), str(cur)], env=ENV)
    assert cli.exit_code == 3, cli.output
    # The configured test decides: with --min-samples 5 the p50 checks are judged, a p95 still needs 20.
    loose = compare_runs(base, cur, thresholds=Thresholds(min_samples=5), out_dir=tmp_path / "o")
    decided = loose.table.filter(pl.col("decided"))
    assert "p50 latency" in decided["metric"].to_list() and "p95 latency" not in decided["metric"].to_list()


def test_enough_data_decides_and_a_regression_still_exits_1(tmp_path: Path) -> None:
    base, cur = _run(tmp_path, "base", 60, 1), _run(tmp_path, "cur", 60, 2)
    fine = compare_runs(base, cur)
    assert fine.exit_code == 0 and not fine.undecided, fine.markdown
    slower = [ModelSpec("m-1", median_s=0.8 * 1.6), MODELS[1]]
    worse = compare_runs(base, _run(tmp_path, "worse", 60, 3, slower))
    assert worse.exit_code == 1 and "m-1: p50 latency" in worse.regressions
    # A regression found on the checks that could be judged wins over the ones that could not.
    few = compare_runs(base, _run(tmp_path, "few", 15, 4, slower), out_dir=tmp_path / "few-out")
    assert few.exit_code == 1 and few.undecided and all(r.startswith("m-1") for r in few.regressions)
    assert "m-1: p95 latency" in few.undecided


def test_compare_md_opens_with_both_runs_methodology(tmp_path: Path) -> None:
    base, cur = _run(tmp_path, "base", 30, 1), _run(tmp_path, "cur", 30, 2)
    md = compare_runs(base, cur).markdown
    assert md.index("## Methodology") < md.index("| model | metric |")
    assert "| methodology | baseline | current |" in md
