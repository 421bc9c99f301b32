"""What the engine served (deploy/parity.py): the HTTP client that asks an engine to render a
parity prompt (`/tokenize`) and to complete the reference's prompt ids greedily
(`/v1/completions`, tokens reported as ids)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.errors import StageError

# The engine's top alternatives per position, recorded at a divergence.
SERVED_TOP_LOGPROBS = 2
REQUEST_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Served:
    token_ids: list[int]
    logprobs: list[float]
    # the engine's top SERVED_TOP_LOGPROBS ids -> logprob per position
    top: list[dict[int, float]]
    text: str
    finish_reason: str | None


def served_greedy(base_url: str, served_model_name: str, prompt_ids: Sequence[int],
                  max_tokens: int) -> Served:
    """Greedy completion of a token-id prompt, tokens reported as ids (vLLM's
    `return_tokens_as_token_ids`, which the local engine implements too). Sampling settings
    are pinned: without temperature 0 vLLM samples, and it applies the model's
    generation_config (e.g. a repetition penalty) to any setting a request leaves out."""
    body = {"model": served_model_name, "prompt": list(prompt_ids), "max_tokens": max_tokens,
            "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0,
            "frequency_penalty": 0.0, "presence_penalty": 0.0,
            "logprobs": SERVED_TOP_LOGPROBS, "return_tokens_as_token_ids": True}
    url = f"{base_url}/v1/completions"
    reply = post_json(url, body)
    try:
        choice = reply["choices"][0]
        logprobs = choice.get("logprobs") or {}
        return Served(
            token_ids=[_token_id(t) for t in logprobs.get("tokens", [])],
            logprobs=[float(v) for v in logprobs.get("token_logprobs", [])],
            top=[{_token_id(k): float(v) for k, v in (entry or {}).items()}
                 for entry in logprobs.get("top_logprobs", [])],
            text=str(choice.get("text", "")),
            finish_reason=choice.get("finish_reason"),
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise StageError("DEPLOY_PARITY_REQUEST_FAILED",
                         f"{url} answered the served-model parity check with a reply it cannot "
                         f"read ({exc}): {json.dumps(reply)[:300]}. It must be vLLM's "
                         "completions format with logprobs as 'token_id:N' "
                         "(return_tokens_as_token_ids).") from exc


def served_prompt_ids(base_url: str, body: dict[str, Any]) -> list[int]:
    return [int(t) for t in post_json(f"{base_url}/tokenize", body)["tokens"]]


def _token_id(token: str) -> int:
    if not token.startswith("token_id:"):
        raise ValueError(f"engine returned token {token!r}, not 'token_id:N': it ignored "
                         "return_tokens_as_token_ids")
    return int(token.removeprefix("token_id:"))


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        raise StageError("DEPLOY_PARITY_REQUEST_FAILED",
                         f"{url} answered {exc.code} to the served-model parity check: "
                         f"{exc.read().decode(errors='replace')[:500]}. The engine must serve "
                         "/tokenize and /v1/completions with token-id prompts, logprobs and "
                         "return_tokens_as_token_ids (vLLM and the local engine do).") from exc
    except (OSError, ValueError) as exc:
        raise StageError("DEPLOY_PARITY_REQUEST_FAILED",
                         f"the served-model parity check could not reach {url}: {exc}. Read "
                         "the engine's log; it passed its health check just before.") from exc

