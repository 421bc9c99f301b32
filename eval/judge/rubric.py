"""Single-answer grading: each answer scored 1-5 against the reference answer.

The score is the expected rubric score from the verdict token's logprobs where the endpoint
returns them, else the parsed digit. Reported for the candidate (and the champion when
there is one); the gate uses the pairwise win rate, not these scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eval.judge.cache import cache_key
from eval.judge.client import JudgeClient, JudgeRequest
from eval.judge.parsing import expected_rubric_score, parse_score
from eval.judge.prompts import JudgePrompt


@dataclass(frozen=True)
class GradeItem:
    item_id: str
    question: str
    reference: str
    answer: str


@dataclass(frozen=True)
class Grade:
    item_id: str
    # Parsed digit, None for an invalid output; `score` is the expected score or the digit.
    verdict: int | None
    score: float | None
    scored_from_logprobs: bool


def grade(client: JudgeClient, prompt: JudgePrompt, items: Sequence[GradeItem]) -> list[Grade]:
    requests = [
        JudgeRequest(
            prompt.render(question=i.question, reference=i.reference, answer=i.answer),
            cache_key(judge_model=client.identity, prompt_id=prompt.prompt_id,
                      question=i.question, outputs=[i.reference, i.answer],
                      max_tokens=client.policy.max_tokens,
                      logprobs=client.policy.request_logprobs))
        for i in items
    ]
    grades = []
    for item, reply in zip(items, client.complete_all(requests), strict=True):
        verdict = parse_score(reply.text)
        expected = expected_rubric_score(reply.top_logprobs) if verdict is not None else None
        score = expected if expected is not None else verdict
        grades.append(Grade(item.item_id, verdict, None if score is None else float(score),
                            expected is not None))
    return grades


@dataclass(frozen=True)
class RubricSummary:
    num_items: int
    invalid_output_rate: float
    mean_score: float
    interval_low: float
    interval_high: float
    scored_from_logprobs: int


def summarise(grades: Sequence[Grade], *, confidence: float, resamples: int, seed: int
              ) -> RubricSummary:
    from eval.stats import mean_interval

    scores = [g.score for g in grades if g.score is not None]
    low, high = mean_interval(scores, confidence=confidence, resamples=resamples, seed=seed)
    return RubricSummary(
        num_items=len(grades),
        invalid_output_rate=(len(grades) - len(scores)) / len(grades) if grades
        else float("nan"),
        mean_score=sum(scores) / len(scores) if scores else float("nan"),
        interval_low=low,
        interval_high=high,
        scored_from_logprobs=sum(g.scored_from_logprobs for g in grades),
    )
