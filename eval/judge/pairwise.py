"""Pairwise judging: candidate vs champion, each pair judged in both orders.

Order 1 shows the candidate as A, order 2 shows it as B. A pair is consistent when both
orders name the same side (or both say TIE); an inconsistent pair is the judge preferring a
position, not an answer, and counts as a tie (score 0.5). A pair with an invalid output in
either order has no score and counts towards the invalid-output rate.

The candidate's score for a pair is in [0, 1]: from the verdict tokens' probabilities
(p(candidate) + p(tie)/2, averaged over both orders) where the endpoint returns logprobs,
else 1 / 0.5 / 0 from the verdicts. The win rate is the mean score over valid pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eval.judge.cache import cache_key
from eval.judge.client import Judge, JudgeReply, JudgeRequest
from eval.judge.parsing import PAIRWISE_VERDICTS, option_probabilities, parse_pairwise
from eval.judge.prompts import JudgePrompt

# What a verdict means for the candidate, by order (candidate shown first / second).
_SIDE = {
    "candidate_first": {"A": "candidate", "B": "champion", "TIE": "tie"},
    "champion_first": {"A": "champion", "B": "candidate", "TIE": "tie"},
}
_DISCRETE_SCORE = {"candidate": 1.0, "tie": 0.5, "champion": 0.0}


@dataclass(frozen=True)
class PairItem:
    item_id: str
    question: str
    candidate: str
    champion: str


@dataclass(frozen=True)
class PairVerdict:
    item_id: str
    # Raw verdicts ("A"/"B"/"TIE"), None where the output was invalid or the call failed.
    candidate_first: str | None
    champion_first: str | None
    # "candidate" | "champion" | "tie" | "inconsistent" | "invalid"
    outcome: str
    # The candidate's score in [0, 1]; None for invalid pairs.
    score: float | None
    scored_from_logprobs: bool


def judge_pairs(client: Judge, prompt: JudgePrompt, items: Sequence[PairItem]
                ) -> list[PairVerdict]:
    requests = []
    for item in items:
        for first, second in ((item.candidate, item.champion), (item.champion, item.candidate)):
            requests.append(JudgeRequest(
                prompt.render(question=item.question, answer_a=first, answer_b=second),
                cache_key(judge_model=client.identity, prompt_id=prompt.prompt_id,
                          question=item.question, outputs=[first, second],
                          max_tokens=client.policy.max_tokens,
                          logprobs=client.policy.request_logprobs)))
    replies = client.complete_all(requests)
    return [_verdict(item, replies[2 * i], replies[2 * i + 1]) for i, item in enumerate(items)]


def _verdict(item: PairItem, candidate_first: JudgeReply, champion_first: JudgeReply
             ) -> PairVerdict:
    raw_1, raw_2 = parse_pairwise(candidate_first.text), parse_pairwise(champion_first.text)
    if raw_1 is None or raw_2 is None:
        return PairVerdict(item.item_id, raw_1, raw_2, "invalid", None, False)
    side_1 = _SIDE["candidate_first"][raw_1]
    side_2 = _SIDE["champion_first"][raw_2]
    if side_1 != side_2:
        return PairVerdict(item.item_id, raw_1, raw_2, "inconsistent", 0.5, False)
    probs_1 = option_probabilities(candidate_first.top_logprobs, PAIRWISE_VERDICTS)
    probs_2 = option_probabilities(champion_first.top_logprobs, PAIRWISE_VERDICTS)
    if probs_1 is not None and probs_2 is not None:
        score_1 = probs_1["A"] + probs_1["TIE"] / 2  # candidate is A
        score_2 = probs_2["B"] + probs_2["TIE"] / 2  # candidate is B
        return PairVerdict(item.item_id, raw_1, raw_2, side_1, (score_1 + score_2) / 2, True)
    return PairVerdict(item.item_id, raw_1, raw_2, side_1, _DISCRETE_SCORE[side_1], False)


@dataclass(frozen=True)
class PairwiseSummary:
    num_pairs: int
    num_valid_pairs: int
    # Invalid verdicts (unparseable output or failed call) / verdicts requested (2 per pair).
    invalid_output_rate: float
    # Consistent pairs / valid pairs.
    position_consistency_rate: float
    # Share of valid single verdicts that chose position A over B (ties left out):
    # far from 0.5 means the judge leans on position.
    first_position_rate: float
    outcomes: dict[str, int]
    scored_from_logprobs: int
    win_rate: float
    win_rate_interval_low: float
    win_rate_interval_high: float


def summarise(verdicts: Sequence[PairVerdict], *, confidence: float, resamples: int,
              seed: int) -> PairwiseSummary:
    from eval.stats import mean_interval

    outcomes = {name: 0 for name in ("candidate", "champion", "tie", "inconsistent",
                                     "invalid")}
    for v in verdicts:
        outcomes[v.outcome] += 1
    raw = [r for v in verdicts for r in (v.candidate_first, v.champion_first)]
    invalid = sum(r is None for r in raw)
    decisive = [r for r in raw if r in ("A", "B")]
    scores = [v.score for v in verdicts if v.score is not None]
    valid = len(scores)
    low, high = mean_interval(scores, confidence=confidence, resamples=resamples, seed=seed)
    return PairwiseSummary(
        num_pairs=len(verdicts),
        num_valid_pairs=valid,
        invalid_output_rate=invalid / len(raw) if raw else float("nan"),
        position_consistency_rate=(valid - outcomes["inconsistent"]) / valid
        if valid else float("nan"),
        first_position_rate=decisive.count("A") / len(decisive) if decisive else float("nan"),
        outcomes=outcomes,
        scored_from_logprobs=sum(v.scored_from_logprobs for v in verdicts),
        win_rate=sum(scores) / valid if valid else float("nan"),
        win_rate_interval_low=low,
        win_rate_interval_high=high,
    )
