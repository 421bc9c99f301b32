"""The training loop, run identically on every rank (torchrun / Flyte Elastic workers).

Per optimizer step each rank runs ``accumulation_steps`` micro-batches of its slice of the
global batch; DDP averages gradients (or FSDP2 reduce-scatters them), so the update equals a
single-process step on the whole global batch up to float summation order.

Read top to bottom: `run_training` -> `build_job` (data, model, optimizer, resume, MLflow) ->
`_train` (one `train_step` per step, then metrics, validation and checkpoints) ->
`export_model` -> `_finish` (summary metrics, TrainResult).

Modules: loop_job.py (`build_job`: everything built before the first step, the optimizer and
its schedule), loop_step.py (`train_step`: one optimizer step; the validation loss),
loop_export.py (`export_model`: the HF directory, LoRA merged); this module keeps the loop,
its metrics and checkpoints, the result and the public API.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.progress import StepProgress
from training import distributed
from training.config import TrainConfig
from training.loop_export import Exported, export_model, merge_lora, write_hf_directory
from training.loop_job import (
    TrainJob,
    TrainPaths,
    build_job,
    build_optimizer,
    check_device_options,
    lr_factor,
)
from training.loop_step import (
    StepOutcome,
    accumulate_chat_gradients,
    chat_loss_sum,
    train_step,
    validation_loss,
)
from training.telemetry import peak_memory_bytes

# The public API, wherever each part now lives (tasks, bench and tests import it here).
__all__ = ["LORA_ADAPTER_ARTIFACT_PATH", "StepOutcome", "TrainPaths", "TrainResult",
           "build_optimizer", "lr_factor", "run_training", "train_step"]

# The names these functions had before the split (bench/sft_peer.py and tests use them).
_setup = build_job
_accumulate_chat_gradients = accumulate_chat_gradients
_chat_loss_sum = chat_loss_sum
_merge_lora = merge_lora
_write_hf_directory = write_hf_directory

logger = logging.getLogger(__name__)

# Where a LoRA run's adapter goes in its MLflow run's artifacts.
LORA_ADAPTER_ARTIFACT_PATH = "lora_adapter"


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


def run_training(config: TrainConfig, paths: TrainPaths) -> TrainResult:
    """Train (or resume) and write the HF model directory; returns the same result on all
    ranks, with `model_digest` computed by rank 0 and broadcast."""
    info = distributed.setup(config.collective_timeout_seconds, config.nccl_environment())
    try:
        return _run(config, paths, info)
    finally:
        distributed.teardown(info)


def _run(config: TrainConfig, paths: TrainPaths, info: distributed.Dist) -> TrainResult:
    check_device_options(config, info.device)
    distributed.check_topology(config, info)
    job = build_job(config, paths, info)
    try:
        timings = _train(job)
        exported = export_model(job.model, job.hf_model, job.data.tokenizer, config,
                                paths.output_dir, info)
    except BaseException:
        if job.mlflow is not None:
            job.mlflow.finish("FAILED")
        raise
    return _finish(job, timings, exported)


# -- the loop ---------------------------------------------------------------------------------

@dataclass
class _Timings:
    step_seconds: list[float] = field(default_factory=list)  # train_step only
    iteration_seconds: list[float] = field(default_factory=list)  # + metrics, eval, checkpoint


def _train(job: TrainJob) -> _Timings:
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


def _record_step(job: TrainJob, done: int, outcome: StepOutcome, seconds: float) -> float:
    """Average the loss over ranks, validate when due, log; returns the global loss."""
    global_loss = distributed.all_reduce_mean(outcome.loss, job.info)
    job.loss_curve.append(global_loss)
    metrics = _step_metrics(job, global_loss, outcome, seconds)
    if _is_due(done, job.config.eval_every_steps, job.config.max_steps):
        job.val_losses[done] = validation_loss(job.model, job.data.val_windows, job.config,
                                               job.info, job.autocast)
        metrics["val_loss"] = job.val_losses[done]
    if job.mlflow is not None:
        job.mlflow.log_step(done, metrics)
    return global_loss


def _step_metrics(
    job: TrainJob, global_loss: float, outcome: StepOutcome, seconds: float
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


def _mfu(job: TrainJob, step_seconds: float) -> float | None:
    """Model FLOPs utilisation over all ranks; None where the device's peak is unknown."""
    if job.peak_flops_per_second is None:
        return None
    return (job.flops_per_token * job.tokens_per_step / step_seconds
            / (job.peak_flops_per_second * job.info.world_size))


def _save_checkpoint(job: TrainJob, done: int) -> None:
    job.checkpoints.save(done, job.model, job.optimizer, {
        "step": done, "samples_consumed": done * job.config.global_batch_size,
        "scheduler": job.scheduler.state_dict(), "loss_curve": job.loss_curve,
        "val_losses": job.val_losses,
        "mlflow_run_id": job.mlflow.run_id if job.mlflow else None,
        **job.provenance.as_train_state(),
    })


# -- finalisation -----------------------------------------------------------------------------

def _finish(job: TrainJob, timings: _Timings, exported: Exported) -> TrainResult:
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


def _final_metrics(job: TrainJob, step_seconds: list[float]) -> dict[str, float]:
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
