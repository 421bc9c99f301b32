"""Paired statistics for the promotion gate, from scipy (not hand-rolled resampling).

- `compare_paired`: candidate vs champion on the same items. Paired bootstrap interval of
  the mean per-item improvement (`scipy.stats.bootstrap`), exact McNemar test for 0/1
  metrics (`scipy.stats.binomtest` on the discordant pairs), and the minimum detectable
  effect of a one-sided paired test at the configured power.
- `mean_interval`: bootstrap interval of a mean (the judge's win rate).
- `cohen_kappa`: agreement beyond chance between the judge and the calibration labels.

"Improvement" is always signed so that positive means the candidate is better: for a
lower-is-better metric (bits per byte) it is champion minus candidate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedComparison:
    task: str
    metric: str
    higher_is_better: bool
    num_pairs: int
    candidate_mean: float
    champion_mean: float
    # Mean per-item improvement (positive: candidate better), in the metric's units.
    improvement: float
    # Two-sided interval at level 2*confidence-1: its lower end is the one-sided
    # `confidence` lower bound that the non-inferiority rule uses.
    interval_low: float
    interval_high: float
    confidence: float
    # Exact McNemar p-value (two-sided) for 0/1 metrics; None for continuous metrics.
    mcnemar_p_value: float | None
    # Items the candidate gets right and the champion wrong, and the reverse (0/1 metrics).
    candidate_only_correct: int | None
    champion_only_correct: int | None
    # Smallest true improvement this many pairs detect with `power` at one-sided `confidence`.
    minimum_detectable_effect: float
    power: float


def compare_paired(task: str, metric: str, candidate: Sequence[float],
                   champion: Sequence[float], *, higher_is_better: bool, binary: bool,
                   confidence: float, power: float, resamples: int, seed: int
                   ) -> PairedComparison:
    cand = np.asarray(candidate, dtype=float)
    champ = np.asarray(champion, dtype=float)
    if cand.shape != champ.shape or cand.ndim != 1:
        raise ValueError("candidate and champion need one value per paired item")
    improvement = (cand - champ) if higher_is_better else (champ - cand)
    low, high = mean_interval(improvement, confidence=2 * confidence - 1, resamples=resamples,
                              seed=seed)
    p_value = only_cand = only_champ = None
    if binary:
        only_cand = int(np.sum((cand == 1) & (champ == 0)))
        only_champ = int(np.sum((cand == 0) & (champ == 1)))
        p_value = mcnemar_exact(only_cand, only_champ)
    return PairedComparison(
        task=task, metric=metric, higher_is_better=higher_is_better, num_pairs=len(cand),
        candidate_mean=_mean(cand), champion_mean=_mean(champ),
        improvement=_mean(improvement), interval_low=low, interval_high=high,
        confidence=confidence, mcnemar_p_value=p_value, candidate_only_correct=only_cand,
        champion_only_correct=only_champ,
        minimum_detectable_effect=minimum_detectable_effect(
            improvement, confidence=confidence, power=power),
        power=power,
    )


def mean_interval(values: Sequence[float] | np.ndarray, *, confidence: float, resamples: int,
                  seed: int) -> tuple[float, float]:
    """Two-sided percentile bootstrap interval of the mean (`scipy.stats.bootstrap`)."""
    data = np.asarray(values, dtype=float)
    if len(data) == 0:
        return math.nan, math.nan
    if np.all(data == data[0]):
        # Every resample has the same mean: the interval is that point (scipy would warn
        # about degenerate data and return NaN).
        return float(data[0]), float(data[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap((data,), np.mean, confidence_level=confidence,
                                 n_resamples=resamples, method="percentile", vectorized=True,
                                 rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mcnemar_exact(candidate_only: int, champion_only: int) -> float:
    """Exact McNemar test: under H0 each discordant pair goes either way with p = 1/2."""
    discordant = candidate_only + champion_only
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(candidate_only, discordant, 0.5).pvalue)


def minimum_detectable_effect(differences: np.ndarray, *, confidence: float, power: float
                              ) -> float:
    """(z_conf + z_power) * sd / sqrt(n): the normal-approximation MDE of a one-sided paired
    test. NaN with fewer than 2 pairs; 0 when every paired difference is identical."""
    n = len(differences)
    if n < 2:
        return math.nan
    sd = float(np.std(differences, ddof=1))
    z = stats.norm.ppf(confidence) + stats.norm.ppf(power)
    return float(z * sd / math.sqrt(n))


@dataclass(frozen=True)
class Kappa:
    kappa: float
    # Asymptotic standard error (Cohen 1960), NaN where kappa is undefined.
    standard_error: float
    observed_agreement: float
    expected_agreement: float
    num_items: int


def cohen_kappa(rater_a: Sequence[str], rater_b: Sequence[str]) -> Kappa:
    """Cohen's kappa = (p_o - p_e) / (1 - p_e) over the union of both raters' categories.

    Undefined (NaN) when chance agreement is 1, i.e. both raters used one and the same
    category for every item: such a calibration run says nothing about the judge.
    """
    if len(rater_a) != len(rater_b):
        raise ValueError("both raters need one label per item")
    n = len(rater_a)
    if n == 0:
        return Kappa(math.nan, math.nan, math.nan, math.nan, 0)
    categories = sorted(set(rater_a) | set(rater_b))
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)))
    for a, b in zip(rater_a, rater_b, strict=True):
        table[index[a], index[b]] += 1
    table /= n
    observed = float(np.trace(table))
    expected = float(table.sum(axis=1) @ table.sum(axis=0))
    if math.isclose(expected, 1.0):
        return Kappa(math.nan, math.nan, observed, expected, n)
    kappa = (observed - expected) / (1 - expected)
    stderr = math.sqrt(observed * (1 - observed) / (n * (1 - expected) ** 2))
    return Kappa(kappa, stderr, observed, expected, n)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan
