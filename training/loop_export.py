"""The trained model, exported (training/loop.py): full weights gathered on every rank, then
rank 0 writes the HF directory (for LoRA: the merged model, and the adapter beside it)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import GenerationConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from common.digests import model_root_digest
from training import distributed
from training.config import TrainConfig


@dataclass(frozen=True)
class Exported:
    model_dir: Path
    digest: str  # model-signing root digest of model_dir
    adapter_dir: Path | None  # LoRA runs only (rank 0's path; no files on other nodes)


def export_model(
    model: torch.nn.Module, hf_model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
    config: TrainConfig, output_dir: Path, info: distributed.Dist,
) -> Exported:
    """Gather the full weights (a collective: every rank), then rank 0 writes the HF directory
    (for LoRA: the merged model, and the adapter beside it) and shares its digest.

    `model` is what trained (DDP / FSDP2 / compiled wrapper); `hf_model` the module inside.
    """
    inner = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    full_state = get_model_state_dict(
        inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    # Beside the model directory, never inside: that one is digested and signed as it is.
    adapter_dir = (output_dir.with_name(f"{output_dir.name}-lora-adapter")
                   if config.finetune == "lora" else None)
    digest_box: list[str | None] = [None]
    if info.rank == 0:
        if adapter_dir is not None:
            hf_model, full_state = merge_lora(full_state, config, adapter_dir)
        assert isinstance(hf_model, LlamaForCausalLM)
        write_hf_directory(hf_model, full_state, tokenizer, config, output_dir)
        digest_box[0] = model_root_digest(output_dir)
    torch.distributed.broadcast_object_list(digest_box, src=0)
    assert digest_box[0] is not None
    return Exported(output_dir, digest_box[0], adapter_dir)


def merge_lora(full_state: dict[str, Any], config: TrainConfig, adapter_dir: Path
               ) -> tuple[LlamaForCausalLM, dict[str, Any]]:
    """Write the adapter to `adapter_dir`; return the merged fp32 model and its state dict,
    which are exported like a full fine-tune's (same files, no PEFT keys)."""
    from training.lora import merge, trained_copy, write_adapter  # peft: LoRA runs only

    trained = trained_copy(full_state, config)
    write_adapter(trained, adapter_dir)
    merged = merge(trained)
    return merged, merged.state_dict()


def write_hf_directory(
    hf_model: LlamaForCausalLM, full_state: dict[str, Any], tokenizer: PreTrainedTokenizerBase,
    config: TrainConfig, output_dir: Path,
) -> None:
    """Weights, tokenizer and generation config, written beside `output_dir` and renamed
    into place, so a half-written model never sits at `output_dir`."""
    tmp = output_dir.with_name(f".{output_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_model.save_pretrained(tmp, state_dict=full_state, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    context = hf_model.config.max_position_embeddings
    GenerationConfig(
        max_new_tokens=min(config.max_new_tokens, context // 2),
        do_sample=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(tmp)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)
