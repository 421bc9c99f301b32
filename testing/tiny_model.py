"""A tiny random-weight Llama saved like the train stage saves one: HF model files, the
project's BPE tokenizer (trained here on the shipped corpus, with the chat template) and a
generation config. Seconds to build; real enough for vLLM and the local engine to load."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from common.settings import PROJECT_ROOT
from common.template import format_example
from data.tokenizer import EOS_TOKEN, save_tokenizer, train_bpe_tokenizer

CONTEXT_TOKENS = 256
_TRAIN_ROWS = 1000


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    rows = [json.loads(line) for line in
            (PROJECT_ROOT / "data/corpus/train.jsonl").read_text().splitlines()]
    texts = [format_example(r["instruction"], r["response"], EOS_TOKEN)
             for r in rows[:_TRAIN_ROWS]]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=512)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=CONTEXT_TOKENS,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(out_dir)
    save_tokenizer(tokenizer, out_dir)
    GenerationConfig(max_new_tokens=16, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id).save_pretrained(out_dir)
    return out_dir
