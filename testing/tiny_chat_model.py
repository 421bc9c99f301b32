"""A tiny random-weight model with the real base model's architecture and chat template.

SmolLM2-135M-Instruct (the packaged base, training/pretrained.py) is a Llama with tied
embeddings, grouped-query attention (3 query heads per KV head), head size 64 and its own
ChatML template. This builds the same shape at ~10 M parameters, with the real tokenizer
(49,152 tokens, read from the packaged GGUF) and the real chat template, so tests exercise the
real model's code paths (template, special tokens, tied weights, vLLM's kernels) in seconds.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from training.pretrained import PACKAGED_MODELS, _packaged_gguf

BASE_NAME = "smollm2-135m-instruct"
CONTEXT_TOKENS = 512


def save_base_tokenizer(out_dir: Path) -> Path:
    """The packaged base model's tokenizer (with its chat template) as an HF directory."""
    gguf = _packaged_gguf(BASE_NAME, PACKAGED_MODELS[BASE_NAME])
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out_dir)
    return out_dir


def build_tiny_chat_model(out_dir: Path, *, tokenizer_dir: Path | None = None,
                          seed: int = 0) -> Path:
    """Save a tiny SmolLM2-shaped model plus the real tokenizer into `out_dir`.

    `tokenizer_dir` (from `save_base_tokenizer`) skips reading the GGUF again (~8 s)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or save_base_tokenizer(out_dir))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=192, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=3, num_key_value_heads=1, head_dim=64,
        max_position_embeddings=CONTEXT_TOKENS, rms_norm_eps=1e-5,
        rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    GenerationConfig(max_new_tokens=16, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id).save_pretrained(out_dir)
    return out_dir
