"""Build the Llama-architecture model that lm-eval and vLLM load as it is."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from common.errors import StageError
from training.config import MODEL_PRESETS, TrainConfig


def build_model(config: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A fresh model from the size preset, or the local base model when one is configured.

    Initialisation draws from torch's global RNG: seed it first for a reproducible model.
    """
    if config.base_model_dir is not None:
        return _load_base_model(Path(config.base_model_dir), config, tokenizer)
    shape = MODEL_PRESETS[config.model_preset]
    llama_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=shape.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        attention_dropout=0.0,
    )
    model = LlamaForCausalLM(llama_config)
    model.config.use_cache = False
    return model


def _load_base_model(
    path: Path, config: TrainConfig, tokenizer: PreTrainedTokenizerBase
) -> LlamaForCausalLM:
    if not (path / "config.json").is_file():
        raise StageError(
            "TRAIN_BASE_MODEL_INVALID",
            f"train.base_model_dir={str(path)!r}: no config.json there. Point it at a local "
            "Hugging Face model directory (saved with save_pretrained); hub names are not "
            "downloaded at run time.",
        )
    model = LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32, local_files_only=True)
    if model.config.vocab_size < len(tokenizer):
        raise StageError(
            "TRAIN_BASE_MODEL_INVALID",
            f"train.base_model_dir={str(path)!r}: its vocabulary ({model.config.vocab_size}) is "
            f"smaller than the dataset tokenizer ({len(tokenizer)}). Set data.base_model_dir to "
            "the same directory so the dataset uses the model's own tokenizer.",
        )
    if config.seq_len > model.config.max_position_embeddings:
        raise StageError(
            "CONFIG_INVALID",
            f"train.seq_len={config.seq_len} exceeds the base model's context "
            f"({model.config.max_position_embeddings}).",
        )
    model.config.use_cache = False
    return model


def with_finetune_method(model: LlamaForCausalLM, config: TrainConfig) -> torch.nn.Module:
    """What trains: `model` itself (finetune=full), or `model` frozen inside a PEFT wrapper
    with trainable LoRA adapters (finetune=lora; a `peft.PeftModel`). LoRA's init draws from
    torch's global RNG: seed first."""
    if config.finetune == "lora":
        from training.lora import apply_lora  # peft loads only for LoRA runs

        return apply_lora(model, config)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_token(model_config: LlamaConfig, seq_len: int, num_parameters: int,
                    num_trainable_parameters: int | None = None) -> float:
    """Training FLOPs per token: 6N for the dense matmuls plus 12·L·H·T for attention
    (PaLM appendix B; Megatron-LM). Forward + backward, no recomputation.

    The 6N is 2N forward, 2N for the input gradients and 2N for the weight gradients; frozen
    weights (LoRA's base) get no weight gradient, so that last term counts only the
    `num_trainable_parameters` (default: all of them, which gives 6N)."""
    trainable = num_parameters if num_trainable_parameters is None else num_trainable_parameters
    attention = 12 * model_config.num_hidden_layers * model_config.hidden_size * seq_len
    return 4.0 * num_parameters + 2.0 * trainable + attention
