"""The training loop, run identically on every rank (torchrun / Flyte Elastic workers).

Per optimizer step each rank runs ``accumulation_steps`` micro-batches of its slice of the
global batch; DDP averages gradients (or FSDP2 reduce-scatters them), so the update equals a
single-process step on the whole global batch up to float summation order.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from tqdm import tqdm
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

from common.digests import model_root_digest
from common.errors import StageError
from training import distributed
from training.checkpoint import CheckpointManager
from training.config import TrainConfig
from training.data import BatchSchedule, load_examples, pack_examples
from training.model import build_model, count_parameters, flops_per_token
from training.telemetry import MlflowLogger, peak_flops_per_second, peak_memory_bytes

logger = logging.getLogger(__name__)


@dataclass
class TrainPaths:
    dataset_dir: Path  # holds train.jsonl, validation.jsonl, tokenizer/
    output_dir: Path  # the HF model directory to create (must not exist yet)
    checkpoint_dir: Path
    mlflow_tracking_uri: str
    mlflow_artifact_root: Path


@dataclass
class TrainResult:
    model_dir: Path
    model_digest: str
    num_parameters: int
    loss_curve: list[float]  # index = step - 1
    val_losses: dict[int, float]  # step -> validation loss
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str = ""
    resumed_from_step: int = 0
    rank: int = 0  # the rank that produced this result (only rank 0's is kept)
    # wall seconds of each loop iteration of this process, logging and checkpoints included
    iteration_seconds: list[float] = field(default_factory=list)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup to 1, then cosine decay to min_lr/lr at max_steps (step is 0-based)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    floor = config.min_learning_rate / config.learning_rate
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _check_device_options(config: TrainConfig, device: torch.device) -> None:
    if device.type != "cuda" and config.mixed_precision == "bf16":
        raise StageError("CONFIG_INVALID", "train.mixed_precision='bf16' needs a CUDA device; "
                         "this worker has none. Use mixed_precision: fp32 on CPU.")
    if device.type != "cuda" and config.compile:
        raise StageError("CONFIG_INVALID", "train.compile=true is supported on CUDA only; "
                         "set compile: false on CPU.")


def _build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
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


def _micro_loss(
    model: torch.nn.Module, windows: torch.Tensor, device: torch.device, autocast: Any
) -> torch.Tensor:
    batch = windows.to(device, non_blocking=True)
    inputs, labels = batch[:, :-1], batch[:, 1:]  # (B, T) each
    with autocast:
        logits = model(input_ids=inputs).logits  # (B, T, V)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1))


@torch.no_grad()
def _validation_loss(
    model: torch.nn.Module, windows: torch.Tensor, config: TrainConfig,
    info: distributed.Dist, autocast: Any,
) -> float:
    model.eval()
    total = 0.0
    for b in range(config.eval_batches):
        start = ((b * info.world_size + info.rank) * config.micro_batch_size) % len(windows)
        idx = torch.arange(start, start + config.micro_batch_size) % len(windows)
        total += float(_micro_loss(model, windows[idx], info.device, autocast))
    model.train()
    return distributed.all_reduce_mean(total / config.eval_batches, info)


def run_training(config: TrainConfig, paths: TrainPaths) -> TrainResult:
    """Train (or resume) and write the HF model directory; returns the same result on all
    ranks, with `model_digest` computed by rank 0 and broadcast."""
    info = distributed.setup(config.collective_timeout_seconds)
    try:
        return _run(config, paths, info)
    finally:
        distributed.teardown(info)


def _run(config: TrainConfig, paths: TrainPaths, info: distributed.Dist) -> TrainResult:
    _check_device_options(config, info.device)
    accumulation = config.accumulation_steps(info.world_size)
    torch.manual_seed(config.seed)  # same initial weights on every rank
    tokenizer = AutoTokenizer.from_pretrained(paths.dataset_dir / "tokenizer")
    train_windows = pack_examples(load_examples(paths.dataset_dir / "train.jsonl"),
                                  tokenizer, config.seq_len)
    val_windows = pack_examples(load_examples(paths.dataset_dir / "validation.jsonl"),
                                tokenizer, config.seq_len)
    schedule = BatchSchedule(len(train_windows), config.global_batch_size, config.seed)

    hf_model = build_model(config, tokenizer)
    num_parameters = count_parameters(hf_model)
    flops_token = flops_per_token(hf_model.config, config.seq_len, num_parameters)
    model = distributed.wrap_model(hf_model, config.parallelism, info)
    optimizer = _build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    if config.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    use_cuda = info.device.type == "cuda"
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if config.mixed_precision == "bf16" else nullcontext())

    checkpoints = CheckpointManager(paths.checkpoint_dir, keep=config.keep_checkpoints,
                                    use_async=use_cuda)
    state = checkpoints.load_latest(model, optimizer) or {}
    start_step: int = state.get("step", 0)
    if state:
        scheduler.load_state_dict(state["scheduler"])
    loss_curve: list[float] = state.get("loss_curve", [])
    val_losses: dict[int, float] = {int(k): v for k, v in state.get("val_losses", {}).items()}

    mlflow_logger = None
    if info.rank == 0:
        mlflow_logger = MlflowLogger(
            paths.mlflow_tracking_uri, paths.mlflow_artifact_root, config.mlflow_experiment,
            state.get("mlflow_run_id"),
            {**json.loads(config.to_json()), "num_parameters": num_parameters,
             "world_size": info.world_size, "accumulation_steps": accumulation},
        )
    peak = peak_flops_per_second(info.device)
    tokens_per_step = config.global_batch_size * config.seq_len
    progress = tqdm(total=config.max_steps, initial=start_step, disable=info.rank != 0,
                    desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)
    step_seconds: list[float] = []
    iteration_seconds: list[float] = []
    model.train()
    try:
        for step in range(start_step, config.max_steps):
            started = time.perf_counter()
            micro_batches = schedule.rank_micro_batches(step, info.rank, info.world_size,
                                                        config.micro_batch_size)
            step_loss = 0.0
            for i, micro in enumerate(micro_batches):
                last = i == len(micro_batches) - 1
                no_sync = getattr(model, "no_sync", None)  # DDP: all-reduce on the last only
                sync = nullcontext() if last or no_sync is None else no_sync()
                with sync:
                    loss = _micro_loss(model, train_windows[micro], info.device, autocast)
                    (loss / accumulation).backward()
                step_loss += float(loss.detach()) / accumulation
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
            if hasattr(grad_norm, "full_tensor"):  # FSDP2 returns a DTensor
                grad_norm = grad_norm.full_tensor()
            lr = float(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if use_cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            step_seconds.append(seconds)
            global_loss = distributed.all_reduce_mean(step_loss, info)
            loss_curve.append(global_loss)
            done = step + 1
            metrics: dict[str, float] = {
                "loss": global_loss, "grad_norm": float(grad_norm), "lr": lr,
                "step_seconds": seconds, "tokens_per_second": tokens_per_step / seconds,
                "peak_memory_bytes": float(peak_memory_bytes(info.device)),
            }
            if peak is not None:
                metrics["mfu"] = flops_token * tokens_per_step / seconds / (peak * info.world_size)
            if done % config.eval_every_steps == 0 or done == config.max_steps:
                val_losses[done] = _validation_loss(model, val_windows, config, info, autocast)
                metrics["val_loss"] = val_losses[done]
            if mlflow_logger is not None:
                mlflow_logger.log_step(done, metrics)
            progress.update(1)
            progress.set_postfix(loss=f"{global_loss:.4f}", lr=f"{lr:.2e}")
            if done % config.checkpoint_every_steps == 0 or done == config.max_steps:
                checkpoints.save(done, model, optimizer, {
                    "step": done, "samples_consumed": done * config.global_batch_size,
                    "scheduler": scheduler.state_dict(), "loss_curve": loss_curve,
                    "val_losses": val_losses, "config_digest": config.digest(),
                    "mlflow_run_id": mlflow_logger.run_id if mlflow_logger else None,
                })
            iteration_seconds.append(time.perf_counter() - started)
        checkpoints.finalize()
        progress.close()
        model_dir, digest = _export_model(model, hf_model, tokenizer, config, paths.output_dir,
                                          info)
    except BaseException:
        if mlflow_logger is not None:
            mlflow_logger.finish("FAILED")
        raise

    # Steady-state timing: skip the first step of this process (allocator and thread warm-up).
    steady = step_seconds[1:] or step_seconds
    mean_step = sum(steady) / len(steady) if steady else float("nan")
    final = {
        "final_loss": loss_curve[-1],
        "final_val_loss": val_losses.get(config.max_steps, float("nan")),
        "num_parameters": float(num_parameters),
        "mean_step_seconds": mean_step,
        "tokens_per_second": tokens_per_step / mean_step if steady else float("nan"),
        "world_size": float(info.world_size),
        "peak_memory_bytes": float(peak_memory_bytes(info.device)),
    }
    if peak is not None and steady:
        final["mfu"] = flops_token * tokens_per_step / mean_step / (peak * info.world_size)
    run_id = ""
    if mlflow_logger is not None:
        mlflow_logger.log_step(config.max_steps, {
            k if k.startswith("final") else f"final_{k}": v
            for k, v in final.items() if math.isfinite(v)
        })
        mlflow_logger.set_tag("shipyard.model_digest", digest)
        run_id = mlflow_logger.run_id
        mlflow_logger.finish()
    return TrainResult(model_dir, digest, num_parameters, loss_curve, val_losses, final,
                       run_id, start_step, info.rank, iteration_seconds)


def _export_model(
    model: torch.nn.Module, hf_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase,
    config: TrainConfig, output_dir: Path, info: distributed.Dist,
) -> tuple[Path, str]:
    """Gather the full weights and write the HF directory atomically (rank 0).

    `model` is what trained (DDP / FSDP2 / compiled wrapper); `hf_model` the module inside.
    """
    inner = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    full_state = get_model_state_dict(
        inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    digest_box: list[str | None] = [None]
    if info.rank == 0:
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
        digest_box[0] = model_root_digest(output_dir)
    torch.distributed.broadcast_object_list(digest_box, src=0)
    assert digest_box[0] is not None
    return output_dir, digest_box[0]
