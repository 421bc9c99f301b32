"""The training loop, run identically on every rank (torchrun / Flyte Elastic workers).

Per optimizer step each rank runs ``accumulation_steps`` micro-batches of its slice of the
global batch; DDP averages gradients (or FSDP2 reduce-scatters them), so the update equals a
single-process step on the whole global batch up to float summation order.

Read top to bottom: `run_training` -> `_setup` (data, model, optimizer, resume, MLflow) ->
`_train` (one `train_step` per step, then metrics, validation and checkpoints) ->
`_export_model` -> `_finish` (summary metrics, TrainResult).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

from common.digests import model_root_digest, sha256_tree
from common.errors import StageError
from common.progress import StepProgress
from training import distributed
from training.checkpoint import CheckpointManager, Provenance
from training.config import TrainConfig
from training.data import (
    IGNORE_INDEX,
    TOKENIZER_DIR,
    BatchSchedule,
    ChatBatch,
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
from training.telemetry import MlflowLogger, peak_flops_per_second, peak_memory_bytes

logger = logging.getLogger(__name__)

# Where a LoRA run's adapter goes in its MLflow run's artifacts.
LORA_ADAPTER_ARTIFACT_PATH = "lora_adapter"


@dataclass
class TrainPaths:
    dataset_dir: Path  # holds train.jsonl, validation.jsonl, tokenizer/
    output_dir: Path  # the HF model directory to create (must not exist yet)
    checkpoint_dir: Path | str  # a local directory or an object-store URI (s3://...)
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
    # finetune=lora: the trained adapter (adapter_config.json, adapter_model.safetensors),
    # beside model_dir; it is logged to the MLflow run as `lora_adapter/`. None otherwise.
    adapter_dir: Path | None = None


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


def run_training(config: TrainConfig, paths: TrainPaths) -> TrainResult:
    """Train (or resume) and write the HF model directory; returns the same result on all
    ranks, with `model_digest` computed by rank 0 and broadcast."""
    info = distributed.setup(config.collective_timeout_seconds, config.nccl_environment())
    try:
        return _run(config, paths, info)
    finally:
        distributed.teardown(info)


def _run(config: TrainConfig, paths: TrainPaths, info: distributed.Dist) -> TrainResult:
    _check_device_options(config, info.device)
    distributed.check_topology(config, info)
    job = _setup(config, paths, info)
    try:
        timings = _train(job)
        exported = _export_model(job.model, job.hf_model, job.data.tokenizer, config,
                                 paths.output_dir, info)
    except BaseException:
        if job.mlflow is not None:
            job.mlflow.finish("FAILED")
        raise
    return _finish(job, timings, exported)


# -- setup ------------------------------------------------------------------------------------

@dataclass
class _Data:
    tokenizer: PreTrainedTokenizerBase
    # (num_train_windows, seq_len + 1) over the memory-mapped file; for a chat dataset its
    # examples, one per sequence (training/data.py says why chat is not packed)
    train_windows: TokenWindows | ChatExamples
    val_windows: TokenWindows | ChatExamples  # (num_val_windows, seq_len + 1), or examples
    schedule: BatchSchedule  # which train windows (chat: examples) each step and rank uses


@dataclass
class _Job:
    """Everything one `run_training` call builds before its first step."""

    config: TrainConfig
    info: distributed.Dist
    data: _Data
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


def _check_device_options(config: TrainConfig, device: torch.device) -> None:
    if device.type != "cuda" and config.mixed_precision == "bf16":
        raise StageError("CONFIG_INVALID", "train.mixed_precision='bf16' needs a CUDA device; "
                         "this worker has none. Use mixed_precision: fp32 on CPU.")
    if device.type != "cuda" and config.compile:
        raise StageError("CONFIG_INVALID", "train.compile=true is supported on CUDA only; "
                         "set compile: false on CPU.")


def _setup(config: TrainConfig, paths: TrainPaths, info: distributed.Dist) -> _Job:
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
    return _Job(
        config, info, data, hf_model, model, optimizer, scheduler, autocast, checkpoints,
        provenance, accumulation, num_parameters, num_trainable,
        flops_per_token(base_model.config, config.seq_len, num_parameters, num_trainable),
        peak_flops_per_second(info.device), start_step=state.get("step", 0),
        loss_curve=state.get("loss_curve", []),
        val_losses={int(k): v for k, v in state.get("val_losses", {}).items()}, mlflow=mlflow,
    )


def _load_data(config: TrainConfig, dataset_dir: Path) -> _Data:
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
    return _Data(tokenizer, train_windows, val_windows, schedule)


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


# -- one optimizer step -----------------------------------------------------------------------

@dataclass
class StepOutcome:
    loss: float  # this rank's mean loss over its micro-batches (not yet averaged over ranks)
    grad_norm: torch.Tensor  # () global L2 norm of the gradients before clipping
    learning_rate: float  # the rate this step's update used


def train_step(job: _Job, step: int) -> StepOutcome:
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


def _accumulate_gradients(job: _Job, micro_batches: list[torch.Tensor]) -> float:
    """Backward each (micro_batch_size,) batch of window indices with its loss scaled by
    1/accumulation, so the summed gradient is the mean over this rank's slice; returns that
    slice's mean loss. Chat data: `_accumulate_chat_gradients`."""
    if isinstance(job.data.train_windows, ChatExamples):
        return _accumulate_chat_gradients(job, job.data.train_windows, micro_batches)
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


def _accumulate_chat_gradients(job: _Job, examples: ChatExamples,
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
            loss_sum = _chat_loss_sum(job.model, batch, job.info.device, job.autocast)
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


def _chat_loss_sum(
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
def _validation_loss(
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
            total += float(_chat_loss_sum(model, batch, info.device, autocast))
            loss_tokens += batch.num_loss_tokens
        else:
            total += float(_micro_loss(model, windows[idx], info.device, autocast))
    model.train()
    if isinstance(windows, ChatExamples):
        total, loss_tokens = _all_reduce_sum([total, loss_tokens], info)
        return total / max(loss_tokens, 1.0)
    return distributed.all_reduce_mean(total / config.eval_batches, info)


# -- the loop ---------------------------------------------------------------------------------

@dataclass
class _Timings:
    step_seconds: list[float] = field(default_factory=list)  # train_step only
    iteration_seconds: list[float] = field(default_factory=list)  # + metrics, eval, checkpoint


def _train(job: _Job) -> _Timings:
    config, info = job.config, job.info
    progress = StepProgress("train", config.max_steps, initial=job.start_step,
                            enabled=info.rank == 0)
    timings = _Timings()
    job.model.train()
    for step in range(job.start_step, config.max_steps):
        started = time.perf_counter()
        outcome = train_step(job, step)
        if info.device.type == "cuda":
            torch.cuda.synchronize()  # the step's time includes its queued GPU work
        seconds = time.perf_counter() - started
        timings.step_seconds.append(seconds)
        done = step + 1
        global_loss = _record_step(job, done, outcome, seconds)
        progress.update(done, loss=f"{global_loss:.4f}", lr=f"{outcome.learning_rate:.2e}")
        if _is_due(done, config.checkpoint_every_steps, config.max_steps):
            _save_checkpoint(job, done)
        timings.iteration_seconds.append(time.perf_counter() - started)
    job.checkpoints.finalize()
    progress.close()
    return timings


def _is_due(done: int, every_steps: int, max_steps: int) -> bool:
    return done % every_steps == 0 or done == max_steps


def _record_step(job: _Job, done: int, outcome: StepOutcome, seconds: float) -> float:
    """Average the loss over ranks, validate when due, log; returns the global loss."""
    global_loss = distributed.all_reduce_mean(outcome.loss, job.info)
    job.loss_curve.append(global_loss)
    metrics = _step_metrics(job, global_loss, outcome, seconds)
    if _is_due(done, job.config.eval_every_steps, job.config.max_steps):
        job.val_losses[done] = _validation_loss(job.model, job.data.val_windows, job.config,
                                                job.info, job.autocast)
        metrics["val_loss"] = job.val_losses[done]
    if job.mlflow is not None:
        job.mlflow.log_step(done, metrics)
    return global_loss


def _step_metrics(
    job: _Job, global_loss: float, outcome: StepOutcome, seconds: float
) -> dict[str, float]:
    metrics = {
        "loss": global_loss, "grad_norm": float(outcome.grad_norm),
        "lr": outcome.learning_rate, "step_seconds": seconds,
        "tokens_per_second": job.tokens_per_step / seconds,
        "peak_memory_bytes": float(peak_memory_bytes(job.info.device)),
    }
    if (mfu := _mfu(job, seconds)) is not None:
        metrics["mfu"] = mfu
    return metrics


def _mfu(job: _Job, step_seconds: float) -> float | None:
    """Model FLOPs utilisation over all ranks; None where the device's peak is unknown."""
    if job.peak_flops_per_second is None:
        return None
    return (job.flops_per_token * job.tokens_per_step / step_seconds
            / (job.peak_flops_per_second * job.info.world_size))


def _save_checkpoint(job: _Job, done: int) -> None:
    job.checkpoints.save(done, job.model, job.optimizer, {
        "step": done, "samples_consumed": done * job.config.global_batch_size,
        "scheduler": job.scheduler.state_dict(), "loss_curve": job.loss_curve,
        "val_losses": job.val_losses,
        "mlflow_run_id": job.mlflow.run_id if job.mlflow else None,
        **job.provenance.as_train_state(),
    })


# -- finalisation -----------------------------------------------------------------------------

def _finish(job: _Job, timings: _Timings, exported: _Exported) -> TrainResult:
    final = _final_metrics(job, timings.step_seconds)
    run_id = ""
    if job.mlflow is not None:
        job.mlflow.log_step(job.config.max_steps, {
            k if k.startswith("final") else f"final_{k}": v
            for k, v in final.items() if math.isfinite(v)
        })
        job.mlflow.set_tag("shipyard.model_digest", exported.digest)
        if exported.adapter_dir is not None:
            job.mlflow.log_artifacts(exported.adapter_dir, LORA_ADAPTER_ARTIFACT_PATH)
        run_id = job.mlflow.run_id
        job.mlflow.finish()
    return TrainResult(exported.model_dir, exported.digest, job.num_parameters, job.loss_curve,
                       job.val_losses, final, run_id, job.start_step, job.info.rank,
                       timings.iteration_seconds, exported.adapter_dir)


def _final_metrics(job: _Job, step_seconds: list[float]) -> dict[str, float]:
    # Steady-state timing: skip the first step of this process (allocator and thread warm-up).
    steady = step_seconds[1:] or step_seconds
    mean_step = sum(steady) / len(steady) if steady else float("nan")
    final = {
        "final_loss": job.loss_curve[-1],
        "final_val_loss": job.val_losses.get(job.config.max_steps, float("nan")),
        "num_parameters": float(job.num_parameters),
        "num_trainable_parameters": float(job.num_trainable_parameters),
        "mean_step_seconds": mean_step,
        "tokens_per_second": job.tokens_per_step / mean_step if steady else float("nan"),
        "world_size": float(job.info.world_size),
        "peak_memory_bytes": float(peak_memory_bytes(job.info.device)),
    }
    if steady and (mfu := _mfu(job, mean_step)) is not None:
        final["mfu"] = mfu
    return final


@dataclass(frozen=True)
class _Exported:
    model_dir: Path
    digest: str  # model-signing root digest of model_dir
    adapter_dir: Path | None  # LoRA runs only (rank 0's path; no files on other nodes)


def _export_model(
    model: torch.nn.Module, hf_model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
    config: TrainConfig, output_dir: Path, info: distributed.Dist,
) -> _Exported:
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
            hf_model, full_state = _merge_lora(full_state, config, adapter_dir)
        assert isinstance(hf_model, LlamaForCausalLM)
        _write_hf_directory(hf_model, full_state, tokenizer, config, output_dir)
        digest_box[0] = model_root_digest(output_dir)
    torch.distributed.broadcast_object_list(digest_box, src=0)
    assert digest_box[0] is not None
    return _Exported(output_dir, digest_box[0], adapter_dir)


def _merge_lora(full_state: dict[str, Any], config: TrainConfig, adapter_dir: Path
                ) -> tuple[LlamaForCausalLM, dict[str, Any]]:
    """Write the adapter to `adapter_dir`; return the merged fp32 model and its state dict,
    which are exported like a full fine-tune's (same files, no PEFT keys)."""
    from training.lora import merge, trained_copy, write_adapter  # peft: LoRA runs only

    trained = trained_copy(full_state, config)
    write_adapter(trained, adapter_dir)
    merged = merge(trained)
    return merged, merged.state_dict()


def _write_hf_directory(
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
