"""Strict parsing of judge outputs, and expected scores from verdict-token logprobs.

A verdict is valid only when the whole output (surrounding whitespace aside) is exactly one
allowed token: ``A``/``B``/``TIE`` for pairwise, ``1``..``5`` for rubric grading. Anything
else is an invalid output, counted and capped (`JudgeConfig.max_invalid_output_rate`),
never guessed at.

Where the endpoint returns top logprobs for the first output token, the score is the
expectation over the allowed verdicts (G-Eval): e.g. p(4)=0.6, p(5)=0.4 gives 4.4, which
keeps the judge's uncertainty that the single sampled token throws away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

PAIRWISE_VERDICTS = ("A", "B", "TIE")
RUBRIC_SCORES = ("1", "2", "3", "4", "5")


def parse_pairwise(text: str | None) -> str | None:
    verdict = (text or "").strip()
    return verdict if verdict in PAIRWISE_VERDICTS else None


def parse_score(text: str | None) -> int | None:
    score = (text or "").strip()
    return int(score) if score in RUBRIC_SCORES else None


def option_probabilities(top_logprobs: Sequence[tuple[str, float]] | None,
                         options: Sequence[str]) -> dict[str, float] | None:
    """Probability of each option at the verdict token, renormalised over the options.

    A token counts for an option when its stripped text is a prefix of exactly that one
    option (a tokenizer may split ``TIE`` as ``T`` + ``IE``). None when no alternative
    matches any option.
    """
    if not top_logprobs:
        return None
    mass = dict.fromkeys(options, 0.0)
    for token, logprob in top_logprobs:
        text = token.strip()
        matches = [o for o in options if text and o.startswith(text)]
        # A log-probability is a finite number <= 0; anything else (a broken server) counts
        # for nothing rather than overflowing exp().
        if len(matches) == 1 and math.isfinite(logprob) and logprob <= 0.0:
            mass[matches[0]] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0:
        return None
    return {option: p / total for option, p in mass.items()}


def expected_rubric_score(top_logprobs: Sequence[tuple[str, float]] | None) -> float | None:
    probs = option_probabilities(top_logprobs, RUBRIC_SCORES)
    return None if probs is None else sum(int(k) * p for k, p in probs.items())
