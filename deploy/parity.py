"""Served = evaluated: before an engine takes traffic, it must answer what the verified model
answers.

Signatures and digests prove which bytes an engine was given, not what it does with them: a
wrong tokenizer or chat template, another dtype or a loader bug serves a different model from
the same verified files. So the stage compares, on a fixed and versioned prompt set
(`parity_prompts.jsonl`), the engine's greedy output with a reference computed in this
process with transformers (fp32) from the verified model directory:

  1. prompt   the engine renders each prompt itself (`/tokenize`: through its chat template
              when the model has one, else the project's prompt format) and must get exactly
              the reference's prompt token ids (catches the tokenizer and the chat template)
  2. tokens   fed the reference's prompt ids (`/v1/completions` with a token-id prompt),
              greedy, it must generate the reference's token ids (catches weights, dtype,
              loader, kernels). One exception: at the first divergent position the two
              candidates may be a near-tie under the reference model (logprob gap at most
              `tolerance`: fp32 summation order may flip such an argmax); the rest of that
              prompt is then not compared, since both continue from different tokens
  3. logprobs each compared token's served logprob must be within `max_logprob_diff` of the
              reference's (a different model often repeats the same greedy tokens: a tiny
              random model answers "\\n" to everything)
  4. text     the engine's text for the compared tokens must be the reference tokenizer's
              decoding of them (catches a detokenizer that maps ids to other strings)

Modules: parity_prompts.py (the prompt set, rendering), parity_reference.py (the fp32
reference), parity_served.py (the HTTP client that asks the engine), parity_compare.py (the
comparison, pure); this module checks one engine with them (`check_engine`), describes a
mismatch and keeps the public API. The stage decides what a failure stops.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import StageError
from deploy.parity_compare import (
    Divergence,
    PromptComparison,
    compare_generation,
    compare_prompt_ids,
    compare_text,
)
from deploy.parity_prompts import (
    PROMPTS_FILE,
    PROMPTS_SHA256,
    PROMPTS_VERSION,
    ParityPrompt,
    chat_messages,
    load_prompts,
    render_prompt_ids,
    tokenize_request,
)
from deploy.parity_reference import (
    REFERENCE_THREADS,
    REFERENCE_TOP_K,
    Reference,
    ReferenceModel,
    ReferenceStep,
    eos_ids,
)
from deploy.parity_served import (
    REQUEST_TIMEOUT_SECONDS,
    SERVED_TOP_LOGPROBS,
    Served,
    post_json,
    served_greedy,
    served_prompt_ids,
)

# The public API, wherever each part now lives.
__all__ = ["LIKELY_CAUSES", "PROMPTS_FILE", "PROMPTS_SHA256", "PROMPTS_VERSION",
           "REFERENCE_THREADS", "REFERENCE_TOP_K", "REQUEST_TIMEOUT_SECONDS",
           "SERVED_TOP_LOGPROBS", "Divergence", "ParityPrompt", "ParityResult",
           "PromptComparison", "Reference", "ReferenceModel", "ReferenceStep", "Served",
           "chat_messages", "check_engine", "compare_generation", "compare_prompt_ids",
           "compare_text", "eos_ids", "load_prompts", "mismatch_error", "post_json",
           "render_prompt_ids", "served_greedy", "served_prompt_ids", "tokenize_request"]

LIKELY_CAUSES = {
    "prompt": "the engine's tokenizer or chat template differs from the verified model's "
              "(a tokenizer/template file overridden by the engine, e.g. --tokenizer or "
              "--chat-template, or a tokenizers/transformers version that renders it "
              "differently)",
    "tokens": "the engine computes another distribution from the same prompt ids: a dtype "
              "other than float32 (--dtype), a loader that reads the weights differently "
              "(tied embeddings, quantization), another model directory, or a kernel bug",
    "logprobs": "same greedy tokens but different probabilities: other weights or a lower "
                "precision dtype than the evaluated float32",
    "text": "the engine decodes token ids to different text: a different tokenizer (vocab or "
            "decoder) than the verified model's",
}


@dataclass
class ParityResult:
    """What the decision record keeps about one engine's check."""

    engine_url: str
    prompts_version: str
    num_prompts: int
    max_tokens: int
    tolerance: float
    max_logprob_diff_allowed: float
    num_tokens_compared: int = 0
    max_logprob_diff: float = 0.0
    near_ties: list[dict[str, Any]] = field(default_factory=list)
    mismatch: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def matched(self) -> bool:
        return self.mismatch is None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "matched": self.matched}


def check_engine(base_url: str, served_model_name: str, model_dir: Path, *, max_tokens: int,
                 tolerance: float, max_logprob_diff: float,
                 prompts: Sequence[ParityPrompt] | None = None) -> ParityResult:
    """Run every parity prompt against the engine at `base_url` (one that reaches only the
    engine under test, never a traffic split). Stops at the first mismatch; the result says
    where, the stage decides what that stops."""
    started = time.monotonic()
    prompts = list(prompts) if prompts is not None else load_prompts()
    result = ParityResult(base_url, PROMPTS_VERSION, len(prompts), max_tokens, tolerance,
                          max_logprob_diff)
    reference_model = ReferenceModel.load(model_dir)
    for prompt in prompts:
        comparison = _check_prompt(reference_model, prompt, base_url, served_model_name,
                                   max_tokens=max_tokens, tolerance=tolerance,
                                   max_logprob_diff=max_logprob_diff)
        result.num_tokens_compared += comparison.num_compared
        result.max_logprob_diff = max(result.max_logprob_diff, comparison.max_logprob_diff)
        if comparison.near_tie is not None:
            result.near_ties.append(_describe(reference_model, prompt, comparison.near_tie))
        if comparison.mismatch is not None:
            result.mismatch = _describe(reference_model, prompt, comparison.mismatch)
            break
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _check_prompt(reference_model: ReferenceModel, prompt: ParityPrompt, base_url: str,
                  served_model_name: str, *, max_tokens: int, tolerance: float,
                  max_logprob_diff: float) -> PromptComparison:
    reference = reference_model.generate(prompt, max_tokens)
    rendered = served_prompt_ids(base_url, tokenize_request(reference_model.tokenizer, prompt,
                                                            served_model_name))
    prompt_mismatch = compare_prompt_ids(prompt.id, reference.prompt_ids, rendered)
    if prompt_mismatch is not None:
        return prompt_mismatch
    served = served_greedy(base_url, served_model_name, reference.prompt_ids, max_tokens)
    comparison = compare_generation(reference, served, tolerance=tolerance,
                                    max_logprob_diff=max_logprob_diff,
                                    eos_token_ids=reference_model.eos_token_ids)
    return compare_text(comparison, reference, served)


def _describe(reference_model: ReferenceModel, prompt: ParityPrompt,
              divergence: Divergence) -> dict[str, Any]:
    return {
        "prompt_id": prompt.id, "prompt": prompt.prompt, "kind": divergence.kind,
        "position": divergence.position,
        "expected_id": divergence.expected_id,
        "expected_text": reference_model.token_text(divergence.expected_id),
        "served_id": divergence.served_id,
        "served_text": reference_model.token_text(divergence.served_id),
        "reference_gap": divergence.reference_gap, "detail": divergence.detail,
        "likely_causes": LIKELY_CAUSES[divergence.kind],
    }


def mismatch_error(result: ParityResult, role: str, model_uri: str, digest: str,
                   consequence: str) -> StageError:
    """DEPLOY_SERVED_MODEL_MISMATCH naming the prompt, the position, expected versus served
    and the likely causes."""
    m = result.mismatch
    assert m is not None
    where = ("prompt token" if m["kind"] == "prompt" else "generated token")
    gap = "" if m["reference_gap"] is None or m["kind"] != "tokens" else (
        f"; the reference prefers its token by {m['reference_gap']:.3g} nats, more than the "
        f"near-tie tolerance {result.tolerance:g}")
    what = (f"expected {m['expected_text']!r} (id {m['expected_id']}), served "
            f"{m['served_text']!r} (id {m['served_id']})") if m["kind"] != "text" else ""
    detail = "; ".join(p for p in (what + gap, m["detail"]) if p)
    return StageError(
        "DEPLOY_SERVED_MODEL_MISMATCH",
        f"the {role} engine at {result.engine_url} does not serve the model that was evaluated "
        f"({model_uri}, sha256:{digest}): parity prompt {m['prompt_id']!r} (prompt set "
        f"v{result.prompts_version}), {where} {m['position']}: {detail}. Likely cause: "
        f"{m['likely_causes']}. {consequence}",
        details={"role": role, "parity": result.to_dict()},
    )

