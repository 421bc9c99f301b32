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

Pure functions (rendering, comparison) plus one HTTP client (`served_greedy`); the stage calls
`check_engine` and decides what a failure stops.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import StageError
from common.template import format_prompt

PROMPTS_FILE = Path(__file__).with_name("parity_prompts.jsonl")
# Bump the version with any change to the file; the digest pins the file to its version (a
# test checks it), so two records with one version compared the same prompts.
PROMPTS_VERSION = "1"
PROMPTS_SHA256 = "4caf128ab8754760dd4674f37f8bdf551a1c760ee200aa6e28731176721f3327"
# Alternatives the reference keeps per position (near-ties among more than two are rare but
# real); the engine is asked for its top 2, recorded at a divergence.
REFERENCE_TOP_K = 5
SERVED_TOP_LOGPROBS = 2
REQUEST_TIMEOUT_SECONDS = 120.0
# The reference decodes one token at a time next to the engines it checks (and whatever else
# shares the machine): one intra-op thread. With two, OpenMP's spinning threads lost to the
# engines on 2 busy cores: SmolLM2-135M took 34 s instead of 7 s for 2 prompts.
REFERENCE_THREADS = 1
_INCOMPLETE_CHAR = "\ufffd"
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


# -- the prompt set ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParityPrompt:
    id: str
    # one user turn (the project's own chat template accepts exactly one)
    prompt: str


def load_prompts(path: Path = PROMPTS_FILE) -> list[ParityPrompt]:
    """The shipped prompt set, refused when its bytes are not the pinned version's."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if path == PROMPTS_FILE and digest != PROMPTS_SHA256:
        raise StageError("CONFIG_INVALID",
                         f"{path} has sha256 {digest}, not the one pinned for version "
                         f"{PROMPTS_VERSION} ({PROMPTS_SHA256}): after editing the prompts bump "
                         "PROMPTS_VERSION and pin the new digest in deploy/parity.py.")
    rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    return [ParityPrompt(str(r["id"]), str(r["prompt"])) for r in rows]


def chat_messages(prompt: ParityPrompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt.prompt}]


def render_prompt_ids(tokenizer: Any, prompt: ParityPrompt) -> list[int]:
    """Prompt ids as the engine's chat route builds them: the model's chat template rendered to
    text, then tokenized without adding special tokens again (vLLM's way); without a template,
    the project's prompt format tokenized as training does."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(chat_messages(prompt), tokenize=False,
                                             add_generation_prompt=True)
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(format_prompt(prompt.prompt)))


def tokenize_request(tokenizer: Any, prompt: ParityPrompt, served_model_name: str
                     ) -> dict[str, Any]:
    """The /tokenize body that makes the engine render `prompt` as `render_prompt_ids` does."""
    if getattr(tokenizer, "chat_template", None):
        return {"model": served_model_name, "messages": chat_messages(prompt),
                "add_generation_prompt": True}
    return {"model": served_model_name, "prompt": format_prompt(prompt.prompt),
            "add_special_tokens": True}


# -- the reference -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReferenceStep:
    token_id: int
    logprob: float
    # the reference's top REFERENCE_TOP_K token ids -> logprob at this position
    top: dict[int, float]


@dataclass(frozen=True)
class Reference:
    prompt_id: str
    prompt_ids: list[int]
    # greedy, at most max_tokens, ending with an EOS token when the model emitted one
    steps: list[ReferenceStep]
    text: str  # the steps decoded without special tokens (what a client reads)

    @property
    def token_ids(self) -> list[int]:
        return [s.token_id for s in self.steps]


@dataclass
class ReferenceModel:
    """The verified model loaded in this process, fp32, as evaluate scored it."""

    tokenizer: Any
    model: Any
    eos_token_ids: frozenset[int]

    @classmethod
    def load(cls, model_dir: Path) -> ReferenceModel:
        # Imported here: the stage module is imported by the Flyte task layer, which must not
        # pay for torch unless a deploy really runs.
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                                     local_files_only=True).eval()
        return cls(tokenizer, model, eos_ids(model, tokenizer))

    def generate(self, prompt: ParityPrompt, max_tokens: int) -> Reference:
        import torch

        prompt_ids = render_prompt_ids(self.tokenizer, prompt)
        steps: list[ReferenceStep] = []
        with torch.inference_mode(), _torch_threads(REFERENCE_THREADS):
            out = self.model(input_ids=torch.tensor([prompt_ids]), use_cache=True)  # (1, T, V)
            for _ in range(max_tokens):
                logprobs = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # (V,)
                values, indices = torch.topk(logprobs, k=REFERENCE_TOP_K)
                top = dict(zip(indices.tolist(), values.tolist(), strict=True))
                token_id = int(indices[0])
                steps.append(ReferenceStep(token_id, float(values[0]), top))
                if token_id in self.eos_token_ids:
                    break
                out = self.model(input_ids=torch.tensor([[token_id]]),  # (1, 1)
                                 cache=out.cache, use_cache=True)
        text = self.tokenizer.decode([s.token_id for s in steps], skip_special_tokens=True)
        return Reference(prompt.id, prompt_ids, steps, str(text))

    def token_text(self, token_id: int | None) -> str:
        if token_id is None:
            return "<end of output>"
        return str(self.tokenizer.decode([token_id], skip_special_tokens=False))


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every id that ends a generation: the config's, the generation config's and the
    tokenizer's EOS (vLLM and the local engine stop on each)."""
    ids: set[int] = set()
    for source in (model.config, getattr(model, "generation_config", None)):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


# -- what the engine served ----------------------------------------------------------------------
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


# -- the comparison (pure) -----------------------------------------------------------------------
@dataclass(frozen=True)
class Divergence:
    """Where the served output first leaves the reference's."""

    kind: str  # "prompt", "tokens", "logprobs" or "text" (keys of LIKELY_CAUSES)
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
    near-tie (see the module docstring); compared tokens' logprobs within max_logprob_diff.

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


# -- one engine ----------------------------------------------------------------------------------
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

