"""The parity reference (deploy/parity.py): the verified model loaded in this process with
transformers, fp32, decoding each parity prompt greedily and keeping its top alternatives."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.parity_prompts import ParityPrompt, render_prompt_ids

# Alternatives the reference keeps per position (near-ties among more than two are rare but
# real); the engine is asked for its top 2, recorded at a divergence.
REFERENCE_TOP_K = 5
# The reference decodes one token at a time next to the engines it checks (and whatever else
# shares the machine): one intra-op thread. With two, OpenMP's spinning threads lost to the
# engines on 2 busy cores: SmolLM2-135M took 34 s instead of 7 s for 2 prompts.
REFERENCE_THREADS = 1


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

