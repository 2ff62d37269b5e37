"""Statistical building blocks for the report: intervals, bootstraps, tests (building-blocks §3).

Pure numpy/scipy on arrays; no polars, no I/O. Every random draw comes from a
generator the caller seeds, so a report is reproducible.

Stated bounds:
- Percentile intervals are distribution-free order-statistic intervals (coverage ≥ 95 %),
  not bootstraps, which under-cover tail percentiles.
- Bootstraps draw `B` resamples of at most `cap` values. Above `cap`, a random
  subsample of `cap` values is resampled and the bootstrap deviations are rescaled by
  √(cap/n) around the full-sample estimate (the spread of a mean or quantile shrinks
  as 1/√n); the interval is then approximate to that first order.

`scipy.stats` is imported on first use: it takes ~0.5 s of start-up CPU, and a run without a
report (the end-of-run health lines read the summary's constants) never needs it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "BOOT_CAP",
    "BOOT_RESAMPLES",
    "Interval",
    "Resampler",
    "boot_interval",
    "boot_p_value",
    "holm",
    "mann_whitney_p",
    "mcnemar_p",
    "order_stat_ranks",
    "percentile_ci",
    "quantile_rows",
    "ratio_interval",
    "wilcoxon_p",
    "wilson",
]


def _sps() -> ModuleType:
    from scipy import stats

    return stats


BOOT_RESAMPLES = 1000
BOOT_CAP = 4000
ALPHA = 0.05

Interval = tuple[float | None, float | None]
Statistic = Callable[[np.ndarray], np.ndarray]  # (B, m) -> (B,)


def order_stat_ranks(n: int, p: float, alpha: float = ALPHA) -> tuple[int, int]:
    """1-based ranks (l, u) with P(x₍l₎ ≤ ξ_p ≤ x₍u₎) ≥ 1 − α; l < 1 or u > n means unbounded."""
    if n <= 0:
        return 0, 1
    lo = int(_sps().binom.ppf(alpha / 2, n, p))
    hi = int(_sps().binom.ppf(1 - alpha / 2, n, p)) + 1
    return lo, hi


def percentile_ci(sorted_x: np.ndarray, p: float, alpha: float = ALPHA) -> Interval:
    """Order-statistic interval of the p-quantile; (None, None) when n is too small for both bounds."""
    n = len(sorted_x)
    lo, hi = order_stat_ranks(n, p, alpha)
    if lo < 1 or hi > n:
        return None, None
    return float(sorted_x[lo - 1]), float(sorted_x[hi - 1])


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> Interval:
    """Wilson score interval for a proportion: sane at 0 %, 100 % and small n."""
    if n <= 0:
        return None, None
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean(a: np.ndarray) -> np.ndarray:
    return np.asarray(a.mean(axis=-1))


def quantile_rows(a: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolated q-quantile of each row, partitioning `a` in place (a scratch matrix)."""
    m = a.shape[-1]
    pos = q * (m - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, m - 1)
    a.partition(sorted({lo, hi}), axis=-1)
    return np.asarray(a[..., lo] + (pos - lo) * (a[..., hi] - a[..., lo]))


class Resampler:
    """Seeded bulk bootstrap; one (B, m) index matrix per size m is drawn once and reused.

    Reuse is safe because every sample is shuffled (or subsampled at random) first, so
    the same index pattern meets independent orderings; it makes a 1M-row report fast.
    """

    def __init__(self, seed: int, *, resamples: int = BOOT_RESAMPLES, cap: int = BOOT_CAP) -> None:
        self.rng = np.random.default_rng(seed)
        self.resamples = resamples
        self.cap = cap
        self._indices: dict[int, np.ndarray] = {}

    def _idx(self, m: int) -> np.ndarray:
        if m not in self._indices:
            self._indices[m] = self.rng.integers(0, m, size=(self.resamples, m))
        return self._indices[m]

    def bootstrap(self, x: np.ndarray, statistic: Statistic = _mean) -> tuple[float, np.ndarray] | None:
        """The full-sample estimate and `resamples` replicates of `statistic` (None when empty).

        Above `cap` values the replicates come from a random subsample of `cap` and are
        rescaled to the full n (see the module docstring).
        """
        x = np.asarray(x, dtype=np.float64)
        n = len(x)
        if n == 0:
            return None
        estimate = float(statistic(x[None, :].copy())[0])
        if n == 1:
            return estimate, np.full(self.resamples, estimate)
        if n <= self.cap:
            sub = x[self.rng.permutation(n)]
        else:
            sub = x[self.rng.choice(n, size=self.cap, replace=False)]
        m = len(sub)
        reps = statistic(sub[self._idx(m)])
        if m < n:
            sub_estimate = float(statistic(sub[None, :].copy())[0])
            reps = estimate + (reps - sub_estimate) * math.sqrt(m / n)
        return estimate, reps


def boot_interval(reps: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates."""
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def boot_p_value(reps: np.ndarray, null: float = 0.0) -> float:
    """Two-sided bootstrap p-value: twice the smaller tail mass on either side of `null`."""
    if len(reps) == 0:
        return 1.0
    below = float(np.mean(reps <= null))
    above = float(np.mean(reps >= null))
    return min(1.0, 2 * min(below, above))


def wilcoxon_p(d: np.ndarray) -> float:
    """Wilcoxon signed-rank p-value (two-sided) of paired differences; 1.0 when all are zero."""
    d = d[np.isfinite(d)]
    if len(d) < 2 or not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(_sps().wilcoxon(d, zero_method="wilcox", method="approx").pvalue)


def mann_whitney_p(a: np.ndarray, b: np.ndarray) -> float:
    """Mann–Whitney U p-value (two-sided) for unpaired samples."""
    if len(a) < 2 or len(b) < 2:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(_sps().mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p


def ratio_interval(
    num: np.ndarray, den: np.ndarray, seed: int, resamples: int = BOOT_RESAMPLES, alpha: float = ALPHA
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of sum(num) / sum(den), resampling the (num, den) pairs together.

    For cost per passed answer: the spend and the passes of the same calls move together. A
    replicate without any pass has no ratio (it is left out; the upper end is then infinite when
    such replicates are more than alpha/2 of them).
    """
    n = len(num)
    if n == 0 or not np.any(den):
        return None, None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    totals, counts = num[idx].sum(axis=1), den[idx].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(counts > 0, totals / counts, np.inf)
    lo, hi = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return float(lo), (float(hi) if math.isfinite(hi) else None)


def mcnemar_p(a_only: int, b_only: int) -> float:
    """McNemar's exact test (two-sided) on paired pass/fail: the discordant pairs are Binomial(n, 1/2).

    `a_only`: cases that passed on A and failed on B; `b_only`: the reverse. Concordant pairs carry
    no information about which arm is better, so they do not enter.
    """
    n = a_only + b_only
    if n == 0:
        return 1.0
    return float(_sps().binomtest(min(a_only, b_only), n, 0.5, alternative="two-sided").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone)."""
    k = len(p_values)
    order = sorted(range(k), key=lambda i: p_values[i])
    adjusted = [1.0] * k
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
