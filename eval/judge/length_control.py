"""Length-controlled win rate of the candidate over the champion (AlpacaEval-LC style).

LLM judges prefer longer answers. A model that only got more verbose would win a raw
pairwise comparison against its champion without being better. Following AlpacaEval 2's
length-controlled win rate (Dubois et al., 2024), the judge's preference for the candidate on
pair i, y_i in [0, 1] (the pairwise score: 1 win, 0.5 tie or inconsistent, 0 loss, or the
verdict-token probabilities), is regressed on the length difference:

    P(candidate preferred) = sigmoid(a + b * tanh((len_candidate - len_champion) / s))

with s the standard deviation of the length differences (characters). The LC win rate is
sigmoid(a): the predicted preference at zero length difference.

Fitting: maximum penalised likelihood (Newton's method) with a weak prior at 0.5 on the
intercept (a ~ N(0, 1) in log-odds) and a much weaker one on the slope (b ~ N(0, 100^2)), so
the fit exists even when the data separate. Where the candidate is longer on EVERY pair, the
model effect and the length effect cannot be told apart from these pairs alone; the prior then
gives the length the credit and the intercept stays near 0.5, so a judge's vote cannot promote
verbosity. With both signs of length difference (the usual case), the data decide and the
prior barely moves the estimate.

Interval: percentile bootstrap over pairs (seeded), the fit repeated on every resample.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from eval.judge.pairwise import PairItem, PairVerdict
from eval.stats import mean_interval

INTERCEPT_PRIOR_PRECISION = 1.0  # 1 / variance of a, in log-odds
SLOPE_PRIOR_PRECISION = 1e-4  # b ~ N(0, 100^2): barely more than the likelihood
NEWTON_ITERATIONS = 200
MAX_NEWTON_STEP = 5.0


@dataclass(frozen=True)
class LengthDistribution:
    # Characters of the answers (the judge reads text; no tokenizer is needed to compare).
    mean_chars: float
    median_chars: float
    p90_chars: float


@dataclass(frozen=True)
class LengthControlledWinRate:
    num_pairs: int  # valid pairs (both orders parsed)
    win_rate: float  # raw: the mean pairwise score
    win_rate_interval_low: float
    win_rate_interval_high: float
    # Share of valid pairs scored as a tie (a TIE verdict or an inconsistent pair).
    tie_rate: float
    lc_win_rate: float
    lc_win_rate_interval_low: float
    lc_win_rate_interval_high: float
    # b: the judge's preference for the longer answer, in log-odds per unit of tanh(diff / s)
    length_coefficient: float
    length_scale_chars: float  # s
    candidate_longer_rate: float  # share of valid pairs where the candidate is longer
    candidate_lengths: LengthDistribution
    champion_lengths: LengthDistribution


def length_distribution(texts: Sequence[str]) -> LengthDistribution:
    lengths = [len(t) for t in texts]
    if not lengths:
        return LengthDistribution(math.nan, math.nan, math.nan)
    return LengthDistribution(statistics.fmean(lengths), float(statistics.median(lengths)),
                              float(np.percentile(lengths, 90)))


def length_controlled_win_rate(items: Sequence[PairItem], verdicts: Sequence[PairVerdict], *,
                               confidence: float, resamples: int, seed: int
                               ) -> LengthControlledWinRate:
    valid = [(i, v) for i, v in zip(items, verdicts, strict=True) if v.score is not None]
    scores = np.array([v.score for _, v in valid], dtype=float)
    diffs = np.array([len(i.candidate) - len(i.champion) for i, _ in valid], dtype=float)
    scale = float(np.std(diffs)) if len(diffs) and np.std(diffs) > 0 else max(
        float(np.max(np.abs(diffs))) if len(diffs) else 1.0, 1.0)
    x = np.tanh(diffs / scale)
    lc, slope, lc_low, lc_high = math.nan, math.nan, math.nan, math.nan
    if len(valid):
        intercept, slope = (float(v[0]) for v in fit_logistic(x[None, :], scores[None, :]))
        lc = _sigmoid(intercept)
        lc_low, lc_high = _bootstrap_lc(x, scores, confidence, resamples, seed)
    low, high = mean_interval(scores, confidence=confidence, resamples=resamples, seed=seed)
    ties = sum(v.outcome in ("tie", "inconsistent") for _, v in valid)
    return LengthControlledWinRate(
        num_pairs=len(valid),
        win_rate=float(np.mean(scores)) if len(valid) else math.nan,
        win_rate_interval_low=low, win_rate_interval_high=high,
        tie_rate=ties / len(valid) if valid else math.nan,
        lc_win_rate=lc, lc_win_rate_interval_low=lc_low, lc_win_rate_interval_high=lc_high,
        length_coefficient=slope, length_scale_chars=scale,
        candidate_longer_rate=float(np.mean(diffs > 0)) if len(valid) else math.nan,
        candidate_lengths=length_distribution([i.candidate for i in items]),
        champion_lengths=length_distribution([i.champion for i in items]))


def fit_logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Penalised logistic regression of y (in [0, 1]) on x, one fit per row.

    x, y: (fits, pairs). Returns the intercepts and slopes, each (fits,). Newton's method on
    the 2x2 system, vectorised over the rows (the bootstrap fits them all at once)."""
    a = np.zeros(x.shape[0])
    b = np.zeros(x.shape[0])
    for _ in range(NEWTON_ITERATIONS):
        p = _sigmoid_array(a[:, None] + b[:, None] * x)
        w = p * (1 - p)
        grad_a = np.sum(y - p, axis=1) - INTERCEPT_PRIOR_PRECISION * a
        grad_b = np.sum((y - p) * x, axis=1) - SLOPE_PRIOR_PRECISION * b
        h_aa = np.sum(w, axis=1) + INTERCEPT_PRIOR_PRECISION
        h_ab = np.sum(w * x, axis=1)
        h_bb = np.sum(w * x * x, axis=1) + SLOPE_PRIOR_PRECISION
        det = h_aa * h_bb - h_ab**2  # > 0: the penalised objective is strictly concave
        step_a = (h_bb * grad_a - h_ab * grad_b) / det
        step_b = (h_aa * grad_b - h_ab * grad_a) / det
        a += np.clip(step_a, -MAX_NEWTON_STEP, MAX_NEWTON_STEP)
        b += np.clip(step_b, -MAX_NEWTON_STEP, MAX_NEWTON_STEP)
        if max(np.max(np.abs(step_a)), np.max(np.abs(step_b))) < 1e-9:
            break
    return a, b


def _bootstrap_lc(x: np.ndarray, y: np.ndarray, confidence: float, resamples: int, seed: int
                  ) -> tuple[float, float]:
    index = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    intercepts, _ = fit_logistic(x[index], y[index])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(_sigmoid_array(intercepts), [tail, 100 - tail])
    return float(low), float(high)


def _sigmoid(value: float) -> float:
    return float(_sigmoid_array(np.array([value]))[0])


def _sigmoid_array(values: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1 + np.tanh(values / 2)))  # stable for large |values|
