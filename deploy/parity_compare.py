"""The parity comparison (deploy/parity.py), pure: the engine's rendered prompt, tokens,
logprobs and text against the reference's, and where they first diverge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deploy.parity_reference import Reference
from deploy.parity_served import Served

_INCOMPLETE_CHAR = "\ufffd"


@dataclass(frozen=True)
class Divergence:
    """Where the served output first leaves the reference's."""

    kind: str  # "prompt", "tokens", "logprobs" or "text" (keys of parity.LIKELY_CAUSES)
    position: int  # index in the prompt ids (kind "prompt") or the generated tokens
    expected_id: int | None  # None: the reference had ended
    served_id: int | None  # None: the engine had ended
    # reference logprob of the expected token minus that of the served one (the gap a
    # near-tie is judged on); None when either side had ended
    reference_gap: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class PromptComparison:
    prompt_id: str
    num_compared: int  # generated tokens compared (both sides equal up to there)
    max_logprob_diff: float  # over the compared tokens: |served - reference| logprob
    near_tie: Divergence | None = None  # accepted: comparison stopped there
    mismatch: Divergence | None = None

    @property
    def matched(self) -> bool:
        return self.mismatch is None


def compare_prompt_ids(prompt_id: str, expected: Sequence[int],
                       served: Sequence[int]) -> PromptComparison | None:
    """None when the engine rendered the prompt exactly as the reference; else a mismatch at
    the first differing position."""
    if list(expected) == list(served):
        return None
    position = next((i for i, (a, b) in enumerate(zip(expected, served, strict=False))
                     if a != b), min(len(expected), len(served)))
    return PromptComparison(prompt_id, 0, 0.0, mismatch=Divergence(
        "prompt", position, _at(expected, position), _at(served, position),
        detail=f"{len(expected)} reference prompt tokens, {len(served)} rendered by the "
               "engine"))


def compare_generation(reference: Reference, served: Served, *, tolerance: float,
                       max_logprob_diff: float, eos_token_ids: frozenset[int]) -> PromptComparison:
    """Tokens must match exactly up to the first divergence, which is accepted only as a
    near-tie (see deploy/parity.py's docstring); compared tokens' logprobs within max_logprob_diff.

    An engine may leave the EOS token out of its reported tokens (it never reaches the text):
    ending with finish_reason "stop" where the reference emitted an EOS counts as that EOS."""
    expected = reference.token_ids
    got = list(served.token_ids)
    ended_on_eos = served.finish_reason == "stop" and not (got and got[-1] in eos_token_ids)
    if ended_on_eos and len(got) < len(expected) and expected[len(got)] in eos_token_ids:
        got.append(expected[len(got)])  # the EOS the engine stopped on without reporting it
    worst = 0.0
    for i in range(max(len(expected), len(got))):
        want, have = _at(expected, i), _at(got, i)
        if want is not None and want == have:
            if i < len(served.logprobs):
                diff = abs(served.logprobs[i] - reference.steps[i].logprob)
                if not diff <= max_logprob_diff:  # NaN fails too
                    return PromptComparison(reference.prompt_id, i, worst, mismatch=Divergence(
                        "logprobs", i, want, have,
                        detail=f"logprob {served.logprobs[i]:.6g} served, "
                               f"{reference.steps[i].logprob:.6g} reference"))
                worst = max(worst, diff)
            continue
        gap = _reference_gap(reference.steps[i].top, want, have) if (
            want is not None and have is not None) else None
        divergence = Divergence("tokens", i, want, have, reference_gap=gap)
        if gap is not None and gap <= tolerance:
            return PromptComparison(reference.prompt_id, i, worst, near_tie=divergence)
        return PromptComparison(reference.prompt_id, i, worst, mismatch=divergence)
    return PromptComparison(reference.prompt_id, len(expected), worst)


def compare_text(comparison: PromptComparison, reference: Reference,
                 served: Served) -> PromptComparison:
    """When every token matched, the engine's text must be the reference's decoding. Trailing
    U+FFFD are not compared: an engine decodes incrementally and drops the first bytes of a
    multi-byte character the output ended in (vLLM does), a one-shot decode renders them."""
    if not comparison.matched or comparison.near_tie is not None or \
            served.text.rstrip(_INCOMPLETE_CHAR) == reference.text.rstrip(_INCOMPLETE_CHAR):
        return comparison
    return PromptComparison(comparison.prompt_id, comparison.num_compared,
                            comparison.max_logprob_diff, mismatch=Divergence(
                                "text", 0, None, None,
                                detail=f"served text {served.text[:80]!r}, reference "
                                       f"{reference.text[:80]!r}"))


def _reference_gap(top: dict[int, float], expected: int, served: int) -> float | None:
    """How much likelier the reference found its token than the served one (None: the served
    token is not even among the reference's top REFERENCE_TOP_K, no near-tie)."""
    if served not in top:
        return None
    return top[expected] - top[served]


def _at(ids: Sequence[int], position: int) -> int | None:
    return ids[position] if position < len(ids) else None

