"""LoRA fine-tuning through PEFT: adapters on a frozen base model, merged back for export.

The trained model is a `peft.PeftModel` around the base `LlamaForCausalLM`: only the adapter
matrices (lora_A, lora_B) require gradients, so the optimizer holds and DDP/FSDP2 reduce only
those. The exported model directory is the merged model (W + (alpha / r) B A per adapted
weight): the same plain Hugging Face layout a full fine-tune writes, so evaluation, signing
and vLLM serve it unchanged. The adapter itself is written beside it for MLflow.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaForCausalLM

from common.errors import StageError
from training.config import TrainConfig

# What the adapter directory holds (PEFT's `save_pretrained` names).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def lora_config(config: TrainConfig) -> LoraConfig:
    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        bias="none",  # biases stay frozen: the merged model is then exactly W + scale * B A
        task_type="CAUSAL_LM",
    )


def apply_lora(model: LlamaForCausalLM, config: TrainConfig) -> PeftModel:
    """Freeze `model` and add adapters on `config.lora_target_modules`.

    lora_A draws from torch's global RNG (lora_B starts at zero, so the first forward equals
    the base model's): seed first, and every rank builds the same adapters."""
    check_target_modules(model, config)
    return get_peft_model(model, lora_config(config))


def adaptable_module_names(model: torch.nn.Module) -> list[str]:
    """The last path component of every linear module an adapter can be merged into.

    A tied lm_head is left out: it is the input embedding matrix too, so merging an adapter
    into it would also change every token's embedding, which the adapter never trained."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear)}
    if getattr(model.config, "tie_word_embeddings", False):
        names.discard("lm_head")
    return sorted(names)


def check_target_modules(model: torch.nn.Module, config: TrainConfig) -> None:
    known = adaptable_module_names(model)
    unknown = [name for name in config.lora_target_modules if name not in known]
    if unknown:
        tied = (" (lm_head is tied to the input embeddings in this model and cannot be "
                "adapted)" if "lm_head" in unknown else "")
        raise StageError(
            "CONFIG_INVALID",
            f"train.lora_target_modules={config.lora_target_modules!r}: {unknown} not among "
            f"the linear modules of the base model at {config.base_model_dir!r}{tied}. Its "
            f"linear modules are {known}; list names from those.",
        )


def trained_copy(full_state: dict[str, Any], config: TrainConfig) -> PeftModel:
    """A CPU fp32 copy of the trained PEFT model from its gathered state dict (keys as in the
    PEFT model's `state_dict()`).

    Rebuilt from the base directory rather than taken from the trained model: under FSDP2 that
    one's parameters are shards, and merging there would change the model that trained."""
    assert config.base_model_dir is not None  # TrainConfig refuses lora without it
    base = LlamaForCausalLM.from_pretrained(
        config.base_model_dir, torch_dtype=torch.float32, local_files_only=True)
    base.config.use_cache = False  # as training.model loads it: same config.json as full
    with torch.random.fork_rng():  # lora_A's fresh init is overwritten just below
        copy = get_peft_model(base, lora_config(config))
    copy.load_state_dict(full_state, strict=True)
    return copy.float()


def merge(model: PeftModel) -> LlamaForCausalLM:
    """The base model with W + (lora_alpha / lora_rank) * B @ A in every adapted weight; the
    adapter layers are gone (plain nn.Linear again). Consumes `model`."""
    merged = model.merge_and_unload(safe_merge=True)  # safe_merge: refuse NaN weights
    assert isinstance(merged, LlamaForCausalLM)
    return merged


def write_adapter(model: PeftModel, adapter_dir: Path) -> Path:
    """adapter_config.json + adapter_model.safetensors, written beside `adapter_dir` and
    renamed into place."""
    tmp = adapter_dir.with_name(f".{adapter_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "README.md").unlink(missing_ok=True)  # PEFT's blank model card: nothing to read
    missing = [name for name in ADAPTER_FILES if not (tmp / name).is_file()]
    assert not missing, f"PEFT did not write {missing}"
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    os.replace(tmp, adapter_dir)
    return adapter_dir
