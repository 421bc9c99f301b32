"""One optimizer step and the validation loss (training/loop.py): gradient accumulation over
this rank's micro-batches (token windows, or chat examples weighted by their loss tokens),
clipping, the update."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from training import distributed
from training.config import TrainConfig
from training.data import IGNORE_INDEX, ChatBatch, ChatExamples, TokenWindows
from training.loop_job import TrainJob


@dataclass
class StepOutcome:
    loss: float  # this rank's mean loss over its micro-batches (not yet averaged over ranks)
    grad_norm: torch.Tensor  # () global L2 norm of the gradients before clipping
    learning_rate: float  # the rate this step's update used


def train_step(job: TrainJob, step: int) -> StepOutcome:
    """Accumulate this rank's micro-batches of 0-based `step`, clip, and update."""
    micro_batches = job.data.schedule.rank_micro_batches(
        step, job.info.rank, job.info.world_size, job.config.micro_batch_size)
    loss = _accumulate_gradients(job, micro_batches)
    grad_norm = torch.nn.utils.clip_grad_norm_(job.model.parameters(),
                                               job.config.grad_clip_norm)
    if hasattr(grad_norm, "full_tensor"):  # FSDP2 returns a DTensor
        grad_norm = grad_norm.full_tensor()
    learning_rate = float(job.scheduler.get_last_lr()[0])  # read before the scheduler moves
    job.optimizer.step()
    job.scheduler.step()
    job.optimizer.zero_grad(set_to_none=True)
    return StepOutcome(loss, grad_norm, learning_rate)


def _accumulate_gradients(job: TrainJob, micro_batches: list[torch.Tensor]) -> float:
    """Backward each (micro_batch_size,) batch of window indices with its loss scaled by
    1/accumulation, so the summed gradient is the mean over this rank's slice; returns that
    slice's mean loss. Chat data: `accumulate_chat_gradients`."""
    if isinstance(job.data.train_windows, ChatExamples):
        return accumulate_chat_gradients(job, job.data.train_windows, micro_batches)
    no_sync = getattr(job.model, "no_sync", None)  # DDP: all-reduce on the last backward only
    step_loss = 0.0
    for i, micro in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with nullcontext() if last or no_sync is None else no_sync():
            loss = _micro_loss(job.model, job.data.train_windows[micro], job.info.device,
                               job.autocast)
            (loss / job.accumulation).backward()
        step_loss += float(loss.detach()) / job.accumulation
    return step_loss


def accumulate_chat_gradients(job: TrainJob, examples: ChatExamples,
                              micro_batches: list[torch.Tensor]) -> float:
    """Chat examples differ in their number of loss tokens, so a mean per micro-batch (or
    per rank) would weight a token by how crowded its batch is. Instead every micro-batch's
    summed token loss is scaled by world_size / N, N the loss tokens of the whole global batch
    (all ranks, all micro-steps; one all-reduce): DDP's and FSDP's gradient average over the
    ranks then leaves exactly the gradient of (sum of token losses) / N. The returned value is
    this rank's summed loss times world_size / N, so the mean over ranks `_record_step` takes
    is the global token mean too."""
    batches = [examples[micro] for micro in micro_batches]
    local_tokens = sum(batch.num_loss_tokens for batch in batches)
    [global_tokens] = _all_reduce_sum([float(local_tokens)], job.info)
    scale = job.info.world_size / max(global_tokens, 1.0)
    no_sync = getattr(job.model, "no_sync", None)  # DDP: all-reduce on the last backward only
    step_loss = 0.0
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        with nullcontext() if last or no_sync is None else no_sync():
            loss_sum = chat_loss_sum(job.model, batch, job.info.device, job.autocast)
            (loss_sum * scale).backward()
        step_loss += float(loss_sum.detach()) * scale
    return step_loss


def _micro_loss(
    model: torch.nn.Module, windows: torch.Tensor, device: torch.device, autocast: Any
) -> torch.Tensor:
    """Mean next-token cross-entropy of (B, seq_len + 1) windows."""
    batch = windows.to(device, non_blocking=True)
    inputs, labels = batch[:, :-1], batch[:, 1:]  # (B, T) each
    with autocast:
        logits = model(input_ids=inputs).logits  # (B, T, V)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1))


def chat_loss_sum(
    model: torch.nn.Module, batch: ChatBatch, device: torch.device, autocast: Any
) -> torch.Tensor:
    """Summed next-token cross-entropy over the loss tokens of a padded chat batch (labels
    -100 elsewhere: prompts, role headers, padding contribute exactly nothing)."""
    input_ids = batch.input_ids.to(device, non_blocking=True)  # (B, T)
    attention_mask = batch.attention_mask.to(device, non_blocking=True)  # (B, T)
    labels = batch.labels.to(device, non_blocking=True)  # (B, T)
    with autocast:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, T, V)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def _all_reduce_sum(values: list[float], info: distributed.Dist) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=info.device)
    torch.distributed.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, windows: TokenWindows | ChatExamples, config: TrainConfig,
    info: distributed.Dist, autocast: Any,
) -> float:
    """Mean loss over `eval_batches` micro-batches per rank; for chat examples the mean over
    all their loss tokens (assistant tokens only), summed over the ranks."""
    model.eval()
    total = loss_tokens = 0.0
    for b in range(config.eval_batches):
        start = ((b * info.world_size + info.rank) * config.micro_batch_size) % len(windows)
        idx = torch.arange(start, start + config.micro_batch_size) % len(windows)
        if isinstance(windows, ChatExamples):
            batch = windows[idx]
            total += float(chat_loss_sum(model, batch, info.device, autocast))
            loss_tokens += batch.num_loss_tokens
        else:
            total += float(_micro_loss(model, windows[idx], info.device, autocast))
    model.train()
    if isinstance(windows, ChatExamples):
        total, loss_tokens = _all_reduce_sum([total, loss_tokens], info)
        return total / max(loss_tokens, 1.0)
    return distributed.all_reduce_mean(total / config.eval_batches, info)
