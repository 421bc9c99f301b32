"""Gate statistics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.stats import (
    cohen_kappa,
    compare_paired,
    mcnemar_exact,
    mean_interval,
    minimum_detectable_effect,
)

pytestmark = pytest.mark.unit


def test_kappa_matches_hand_computed_value() -> None:
    # 10 items. Table (rows: rater a, cols: rater b), categories A, B:
    #   A/A 4, A/B 1, B/A 2, B/B 3  -> p_o = 0.7
    #   a: A 0.5, B 0.5; b: A 0.6, B 0.4 -> p_e = 0.5*0.6 + 0.5*0.4 = 0.5
    #   kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    a = ["A"] * 5 + ["B"] * 5
    b = ["A", "A", "A", "A", "B", "A", "A", "B", "B", "B"]
    result = cohen_kappa(a, b)
    assert result.observed_agreement == pytest.approx(0.7)
    assert result.expected_agreement == pytest.approx(0.5)
    assert result.kappa == pytest.approx(0.4)
    # SE = sqrt(p_o (1 - p_o) / (n (1 - p_e)^2)) = sqrt(0.21 / 2.5)
    assert result.standard_error == pytest.approx(math.sqrt(0.21 / 2.5))


def test_kappa_with_a_third_category_only_one_rater_uses() -> None:
    # Labels A/B vs judge A/B/TIE over 8 items:
    #   (A,A) 3, (A,TIE) 1, (B,B) 2, (B,A) 1, (B,TIE) 1 -> p_o = 5/8
    #   a: A 4/8, B 4/8; b: A 4/8, B 2/8, TIE 2/8 -> p_e = 0.5*0.5 + 0.5*0.25 = 0.375
    #   kappa = (0.625 - 0.375) / 0.625 = 0.4
    a = ["A", "A", "A", "A", "B", "B", "B", "B"]
    b = ["A", "A", "A", "TIE", "B", "B", "A", "TIE"]
    assert cohen_kappa(a, b).kappa == pytest.approx(0.4)


def test_kappa_extremes() -> None:
    assert cohen_kappa(["A", "B", "A"], ["A", "B", "A"]).kappa == pytest.approx(1.0)
    # Perfect disagreement on a balanced set: p_o = 0, p_e = 0.5 -> -1
    assert cohen_kappa(["A", "B"], ["B", "A"]).kappa == pytest.approx(-1.0)
    # One category for everyone: chance agreement is 1, kappa undefined.
    assert math.isnan(cohen_kappa(["A", "A"], ["A", "A"]).kappa)


def test_mcnemar_is_the_exact_binomial_on_discordant_pairs() -> None:
    # 8 vs 1 discordant: two-sided P = 2 * P(X <= 1 | n=9, p=1/2) = 2 * 10/512
    assert mcnemar_exact(8, 1) == pytest.approx(20 / 512)
    assert mcnemar_exact(0, 0) == 1.0


def test_minimum_detectable_effect_formula() -> None:
    diffs = np.array([1.0, -1.0] * 50)  # sd (ddof=1) = sqrt(100/99)
    expected = (1.6448536 + 0.8416212) * math.sqrt(100 / 99) / 10
    assert minimum_detectable_effect(diffs, confidence=0.95, power=0.8) == pytest.approx(
        expected, rel=1e-5)


def test_interval_of_identical_values_is_that_value() -> None:
    assert mean_interval([0.0] * 40, confidence=0.9, resamples=100, seed=0) == (0.0, 0.0)


def test_paired_comparison_signs_improvement_by_direction() -> None:
    cand = [0.5] * 30
    champ = [0.6] * 30
    # Lower is better (bits per byte): the candidate's lower values are an improvement.
    result = compare_paired("t", "bits_per_byte", cand, champ, higher_is_better=False,
                            binary=False, confidence=0.95, power=0.8, resamples=200, seed=0)
    assert result.improvement == pytest.approx(0.1)
    assert result.mcnemar_p_value is None
