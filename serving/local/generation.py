"""One request's decoding loop: EOS and stop strings, incremental text, timings.

Runs in a worker thread (torch releases the GIL in its kernels); it reports text deltas
through `on_delta` for streaming and checks `cancelled` between tokens so a client that
disconnects stops costing compute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from serving.local.model import LocalModel, SamplingParams, TokenLogprob

# Streaming holds back a trailing replacement character: the next byte-level token usually
# completes the multi-byte character it is the first half of.
_INCOMPLETE_CHAR = "\ufffd"


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    # per prompt token (None for the first); only when prompt logprobs were asked for
    prompt_logprobs: list[TokenLogprob | None] | None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"  # "stop" (EOS or stop string), "length" or "abort"
    # monotonic seconds of each generated token, for TTFT and inter-token latency
    token_times: list[float] = field(default_factory=list)


def run_generation(
    model: LocalModel,
    prompt_ids: Sequence[int],
    params: SamplingParams,
    stop: Sequence[str],
    *,
    prompt_top_k: int | None,
    cancelled: threading.Event,
    on_delta: Callable[[str, TokenLogprob | None], None] | None = None,
) -> GenerationResult:
    logits, cache = model.forward_prompt(prompt_ids)
    result = GenerationResult(
        prompt_ids=list(prompt_ids),
        prompt_logprobs=(
            model.prompt_logprobs(prompt_ids, logits, prompt_top_k)
            if prompt_top_k is not None else None
        ),
    )
    if params.max_tokens == 0:
        return result
    hold_back = max((len(s) for s in stop), default=1) - 1
    emitted = 0
    steps = model.decode_steps(logits[-1], cache, params, num_prompt_tokens=len(prompt_ids))
    for step in steps:
        result.token_times.append(time.monotonic())
        if cancelled.is_set():
            result.finish_reason = "abort"
            return result
        if step.token_id in model.eos_token_ids:
            result.token_ids.append(step.token_id)
            result.logprobs.append(step)
            result.finish_reason = "stop"
            break
        result.token_ids.append(step.token_id)
        result.logprobs.append(step)
        text = model.decode(result.token_ids)
        cut = _first_stop(text, stop)
        if cut is not None:
            result.text = text[:cut]
            result.finish_reason = "stop"
            break
        result.text = text
        safe = len(text) - hold_back
        if text.endswith(_INCOMPLETE_CHAR):
            safe = min(safe, len(text) - 1)
        if on_delta is not None and safe > emitted:
            on_delta(text[emitted:safe], step)
            emitted = safe
    if on_delta is not None and len(result.text) > emitted:
        on_delta(result.text[emitted:], None)
    return result


def _first_stop(text: str, stop: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(found) if found else None
