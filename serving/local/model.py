"""The HF model behind the local engine: tokenize, score prompts, decode token by token.

Plain transformers with a KV cache, one sequence per call (no batching): the local engine
exists for machines where vLLM cannot run and for fast tests, where a tiny model makes the
Python overhead, not the matmuls, the cost. Log-probabilities are those of the raw model
distribution (before temperature / top-p), as vLLM returns by default.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from common.errors import StageError


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    # number of top alternatives per position to report; None: no logprobs at all
    top_logprobs: int | None = None


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    # top-k token ids -> logprob, plus the chosen token itself (as vLLM reports it)
    top: dict[int, float]


class LocalModel:
    """A causal LM directory loaded once, shared by every request of the server."""

    def __init__(self, model_dir: Path, *, max_model_len: int | None = None) -> None:
        if not (Path(model_dir) / "config.json").is_file():
            raise StageError(
                "DEPLOY_MODEL_DIR_INVALID",
                f"{model_dir}: no config.json. Serve a Hugging Face model directory (the train "
                "stage's output, or a verified download).",
            )
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model: Any = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=torch.float32, local_files_only=True
        ).eval()
        context = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.max_model_len = min(max_model_len or context, context)
        self.eos_token_ids = self._eos_ids()
        # The tokenizer object is not thread-safe (its truncation/padding state is shared).
        self._tokenizer_lock = threading.Lock()

    def _eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for source in (self.model.config, getattr(self.model, "generation_config", None)):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list):
                ids.update(int(v) for v in value)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return frozenset(ids)

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        with self._tokenizer_lock:
            return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        with self._tokenizer_lock:
            return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def token_text(self, token_id: int) -> str:
        """One token as text (vLLM's legacy-completions `tokens` entries)."""
        return self.decode([token_id], skip_special_tokens=False)

    def render_chat(self, messages: list[dict[str, str]], *,
                    add_generation_prompt: bool = True) -> list[int]:
        """Chat messages -> prompt ids through the model's own chat template (as vLLM does:
        render to text, then tokenize without adding special tokens again)."""
        with self._tokenizer_lock:
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
            return list(self.tokenizer.encode(text, add_special_tokens=False))

    @torch.inference_mode()
    def forward_prompt(self, prompt_ids: Sequence[int]) -> tuple[torch.Tensor, Any]:
        """Logits over the prompt, (T, V), and the KV cache to continue from."""
        input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long)  # (1, T)
        out = self.model(input_ids=input_ids, use_cache=True)
        return out.logits[0], out.past_key_values

    @torch.inference_mode()
    def prompt_logprobs(
        self, prompt_ids: Sequence[int], logits: torch.Tensor, top_k: int
    ) -> list[TokenLogprob | None]:
        """Logprob of every prompt token given the ones before it; None for the first."""
        logprobs = torch.log_softmax(logits[:-1].float(), dim=-1)  # (T-1, V)
        result: list[TokenLogprob | None] = [None]
        for position, token_id in enumerate(prompt_ids[1:]):
            result.append(_token_logprob(logprobs[position], int(token_id), top_k))
        return result

    @torch.inference_mode()
    def decode_steps(
        self,
        last_logits: torch.Tensor,
        cache: Any,
        params: SamplingParams,
        *,
        num_prompt_tokens: int,
    ) -> Iterator[TokenLogprob]:
        """Generate up to `params.max_tokens` tokens; the caller stops early on EOS / stop."""
        generator = torch.Generator()
        generator.manual_seed(params.seed if params.seed is not None else _fresh_seed())
        logits = last_logits  # (V,)
        position = num_prompt_tokens
        for _ in range(params.max_tokens):
            token_id = _sample(logits, params, generator)
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            top_k = params.top_logprobs or 0
            yield _token_logprob(logprobs, token_id, top_k)
            position += 1
            if position >= self.max_model_len:
                return
            out = self.model(
                input_ids=torch.tensor([[token_id]], dtype=torch.long),  # (1, 1)
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            logits = out.logits[0, -1]


def _token_logprob(logprobs: torch.Tensor, token_id: int, top_k: int) -> TokenLogprob:
    top: dict[int, float] = {}
    if top_k > 0:
        values, indices = torch.topk(logprobs, k=min(top_k, logprobs.shape[-1]))
        top = {int(i): float(v) for v, i in zip(values.tolist(), indices.tolist(), strict=True)}
    chosen = float(logprobs[token_id])
    top.setdefault(token_id, chosen)
    return TokenLogprob(token_id=token_id, logprob=chosen, top=top)


def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    if params.temperature <= 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)  # (V,)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < params.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, num_samples=1, generator=generator))


def _fresh_seed() -> int:
    return int(torch.randint(0, 2**31 - 1, (1,)).item())
