"""What one `run_training` call builds before its first step (training/loop.py): data, model,
optimizer and schedule, the newest matching checkpoint, and rank 0's MLflow run."""

from __future__ import annotations

import json
import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from common.digests import sha256_tree
from common.errors import StageError
from training import distributed
from training.checkpoint import CheckpointManager, Provenance
from training.config import TrainConfig
from training.data import (
    TOKENIZER_DIR,
    BatchSchedule,
    ChatExamples,
    TokenWindows,
    dataset_digests,
    is_chat_dataset,
    load_chat_examples,
    load_token_windows,
)
from training.model import (
    build_model,
    count_parameters,
    count_trainable_parameters,
    flops_per_token,
    with_finetune_method,
)
from training.telemetry import MlflowLogger, peak_flops_per_second


@dataclass
class TrainPaths:
    dataset_dir: Path  # holds train.jsonl, validation.jsonl, tokenizer/
    output_dir: Path  # the HF model directory to create (must not exist yet)
    checkpoint_dir: Path | str  # a local directory or an object-store URI (s3://...)
    mlflow_tracking_uri: str
    mlflow_artifact_root: Path


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup to 1, then cosine decay to min_lr/lr at max_steps (step is 0-based)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    floor = config.min_learning_rate / config.learning_rate
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on norms and biases (1-D tensors), as in GPT-2 / Llama training.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        foreach=True,
    )


@dataclass
class TrainData:
    tokenizer: PreTrainedTokenizerBase
    # (num_train_windows, seq_len + 1) over the memory-mapped file; for a chat dataset its
    # examples, one per sequence (training/data.py says why chat is not packed)
    train_windows: TokenWindows | ChatExamples
    val_windows: TokenWindows | ChatExamples  # (num_val_windows, seq_len + 1), or examples
    schedule: BatchSchedule  # which train windows (chat: examples) each step and rank uses


@dataclass
class TrainJob:
    """Everything one `run_training` call builds before its first step."""

    config: TrainConfig
    info: distributed.Dist
    data: TrainData
    # the module inside `model`, exported at the end: a LlamaForCausalLM, or for LoRA the
    # peft.PeftModel around one
    hf_model: torch.nn.Module
    model: torch.nn.Module  # what trains: hf_model, or its DDP / FSDP2 / compiled wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    autocast: AbstractContextManager[Any]  # bf16 autocast on CUDA, else a no-op
    checkpoints: CheckpointManager
    provenance: Provenance  # config + dataset digests, saved with and checked on checkpoints
    accumulation: int  # micro-batches per optimizer step on each rank
    num_parameters: int
    num_trainable_parameters: int  # num_parameters, or for LoRA the adapters' only
    flops_per_token: float
    peak_flops_per_second: float | None  # of one device; None where unknown (CPU)
    start_step: int  # 0, or the step of the checkpoint resumed from
    loss_curve: list[float]  # global mean loss per step, index = step - 1 (resumed included)
    val_losses: dict[int, float]  # step -> validation loss
    mlflow: MlflowLogger | None  # rank 0 only

    @property
    def tokens_per_step(self) -> int:
        return self.config.global_batch_size * self.config.seq_len


def check_device_options(config: TrainConfig, device: torch.device) -> None:
    if device.type != "cuda" and config.mixed_precision == "bf16":
        raise StageError("CONFIG_INVALID", "train.mixed_precision='bf16' needs a CUDA device; "
                         "this worker has none. Use mixed_precision: fp32 on CPU.")
    if device.type != "cuda" and config.compile:
        raise StageError("CONFIG_INVALID", "train.compile=true is supported on CUDA only; "
                         "set compile: false on CPU.")


def build_job(config: TrainConfig, paths: TrainPaths, info: distributed.Dist) -> TrainJob:
    """Data, model, optimizer, then the newest matching checkpoint and rank 0's MLflow run.

    The order is part of the golden loss curve: the seed is set before the model is built,
    so every rank starts from the same initial weights."""
    accumulation = config.accumulation_steps(info.world_size)
    torch.manual_seed(config.seed)
    data = _load_data(config, paths.dataset_dir)
    base_model = build_model(config, data.tokenizer)
    hf_model = with_finetune_method(base_model, config)
    num_parameters = count_parameters(hf_model)
    num_trainable = count_trainable_parameters(hf_model)
    model = distributed.wrap_model(hf_model, config.parallelism, info, config.nnodes)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    if config.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if config.mixed_precision == "bf16" else nullcontext())
    checkpoints = CheckpointManager(paths.checkpoint_dir, keep=config.keep_checkpoints,
                                    use_async=info.device.type == "cuda")
    provenance = _provenance(config, paths.dataset_dir, info)
    state = checkpoints.load_latest(model, optimizer, provenance) or {}
    if state:
        scheduler.load_state_dict(state["scheduler"])
    mlflow = _start_mlflow(config, paths, info, state.get("mlflow_run_id"),
                           {"num_parameters": num_parameters,
                            "num_trainable_parameters": num_trainable}, accumulation)
    return TrainJob(
        config, info, data, hf_model, model, optimizer, scheduler, autocast, checkpoints,
        provenance, accumulation, num_parameters, num_trainable,
        flops_per_token(base_model.config, config.seq_len, num_parameters, num_trainable),
        peak_flops_per_second(info.device), start_step=state.get("step", 0),
        loss_curve=state.get("loss_curve", []),
        val_losses={int(k): v for k, v in state.get("val_losses", {}).items()}, mlflow=mlflow,
    )


def _load_data(config: TrainConfig, dataset_dir: Path) -> TrainData:
    tokenizer = AutoTokenizer.from_pretrained(dataset_dir / TOKENIZER_DIR)
    # Token files validate_data wrote with this tokenizer; each step copies out its windows.
    tokenizer_digest = sha256_tree(dataset_dir / TOKENIZER_DIR)
    train_windows: TokenWindows | ChatExamples
    val_windows: TokenWindows | ChatExamples
    if is_chat_dataset(dataset_dir):
        pad = tokenizer.pad_token_id
        if pad is None:  # pads are masked out of attention and labels: any id will do
            pad = tokenizer.eos_token_id
        train_windows, val_windows = (
            load_chat_examples(dataset_dir, split, config.seq_len, pad, tokenizer_digest)
            for split in ("train", "validation"))
    else:
        train_windows = load_token_windows(dataset_dir, "train", config.seq_len,
                                           tokenizer_digest)
        val_windows = load_token_windows(dataset_dir, "validation", config.seq_len,
                                         tokenizer_digest)
    schedule = BatchSchedule(len(train_windows), config.global_batch_size, config.seed)
    return TrainData(tokenizer, train_windows, val_windows, schedule)


def _provenance(config: TrainConfig, dataset_dir: Path, info: distributed.Dist) -> Provenance:
    """Rank 0 hashes the dataset once and shares the digests (every rank reads the same files)."""
    digests: list[dict[str, str] | None] = [None]
    if info.rank == 0:
        digests[0] = dataset_digests(dataset_dir)
    torch.distributed.broadcast_object_list(digests, src=0)
    assert digests[0] is not None
    return Provenance(config.digest(), json.loads(config.to_json()), digests[0])


def _start_mlflow(
    config: TrainConfig, paths: TrainPaths, info: distributed.Dist, resumed_run_id: str | None,
    parameter_counts: dict[str, int], accumulation: int,
) -> MlflowLogger | None:
    """Rank 0 logs to MLflow; a resumed run reopens the run its checkpoint names."""
    if info.rank != 0:
        return None
    return MlflowLogger(
        paths.mlflow_tracking_uri, paths.mlflow_artifact_root, config.mlflow_experiment,
        resumed_run_id,
        {**json.loads(config.to_json()), **parameter_counts,
         "world_size": info.world_size, "accumulation_steps": accumulation},
    )
