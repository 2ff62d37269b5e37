"""The report's statistics against numpy/scipy and against known distributions."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

from harness.report.prepared import prepare
from harness.report.stats import (
    Resampler,
    boot_interval,
    holm,
    mcnemar_p,
    order_stat_ranks,
    percentile_ci,
    quantile_rows,
    wilson,
)
from harness.report.summary import QUANTILES, summarize
from tests.synthetic import ModelSpec, synthetic_calls


def test_summary_percentiles_equal_numpy_linear() -> None:
    df = synthetic_calls(
        [ModelSpec("a", error_rate=0.1), ModelSpec("b", median_s=2.0)], cases=137, repeats=3, seed=5
    )
    summary = summarize(prepare(df.lazy()))
    for model in ("a", "b"):
        lat = df.filter((pl.col("model") == model) & (pl.col("status") == "ok"))["latency_s"].to_numpy()
        row = summary.filter(pl.col("model") == model).row(0, named=True)
        for name, q in QUANTILES:
            assert row[f"latency_{name}_s"] == pytest.approx(np.quantile(lat, q, method="linear"), rel=1e-12)
        assert row["latency_mean_s"] == pytest.approx(lat.mean())
        assert row["latency_max_s"] == pytest.approx(lat.max())
        assert row["latency_n"] == len(lat)


def test_quantile_rows_matches_numpy() -> None:
    x = np.random.default_rng(2).lognormal(size=(20, 101))
    for q in (0.0, 0.5, 0.9, 0.95, 0.99, 1.0):
        assert np.allclose(quantile_rows(x.copy(), q), np.quantile(x, q, axis=1))


def test_percentile_ci_equals_scipy_quantile_test() -> None:
    x = np.sort(np.random.default_rng(3).lognormal(size=1000))
    for p in (0.5, 0.9, 0.99):
        lo, hi = percentile_ci(x, p)
        ref = sps.quantile_test(x, q=float(np.quantile(x, p)), p=p).confidence_interval(0.95)
        assert (lo, hi) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_percentile_ci_refuses_when_too_few() -> None:
    assert percentile_ci(np.arange(100.0), 0.99) == (None, None)
    assert percentile_ci(np.arange(368.0), 0.99)[1] is not None
    assert percentile_ci(np.arange(367.0), 0.99) == (None, None)


@pytest.mark.parametrize(("n", "reps"), [(400, 1500), (5000, 500)])
@pytest.mark.parametrize("p", [0.5, 0.99])
def test_order_statistic_interval_coverage(n: int, reps: int, p: float) -> None:
    """Seeded draws from a lognormal with a known quantile: coverage near (and not below) 95 %."""
    rng = np.random.default_rng(42 + n + int(p * 100))
    sigma = 0.5
    truth = float(np.exp(sigma * sps.norm.ppf(p)))
    draws = np.sort(rng.lognormal(0.0, sigma, size=(reps, n)), axis=1)
    lo, hi = order_stat_ranks(n, p)
    assert lo >= 1 and hi <= n
    covered = (draws[:, lo - 1] <= truth) & (truth <= draws[:, hi - 1])
    coverage = covered.mean()
    se = np.sqrt(0.95 * 0.05 / reps)
    assert 0.95 - 3 * se <= coverage <= 0.995, coverage


def test_bootstrap_mean_interval_is_seeded_and_covers() -> None:
    x = np.random.default_rng(4).lognormal(size=20_000)  # above the cap: the rescaled path
    a = Resampler(1).bootstrap(x)
    b = Resampler(1).bootstrap(x)
    assert a is not None and b is not None
    assert np.array_equal(a[1], b[1])
    lo, hi = boot_interval(a[1])
    se = x.std() / np.sqrt(len(x))
    assert lo < x.mean() < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.25)


def test_wilson_and_holm() -> None:
    lo, hi = wilson(0, 50)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0.05 < hi < 0.09
    lo, hi = wilson(50, 50)
    assert hi == 1.0 and 0.9 < lo < 0.95
    assert wilson(0, 0) == (None, None)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


@pytest.mark.parametrize(
    ("a_only", "b_only", "expected"), [(0, 0, 1.0), (10, 0, 0.001953125), (3, 3, 1.0), (1, 9, 0.021484375)]
)
def test_mcnemar_exact_on_known_tables(a_only: int, b_only: int, expected: float) -> None:
    """Exact two-sided values: 2 * P(X <= min) for X ~ Binomial(a_only + b_only, 1/2)."""
    assert mcnemar_p(a_only, b_only) == pytest.approx(expected)
    from scipy.stats import binomtest

    if a_only + b_only:
        assert mcnemar_p(a_only, b_only) == pytest.approx(binomtest(a_only, a_only + b_only, 0.5).pvalue)
