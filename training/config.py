"""`TrainConfig` and the model size presets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from common.errors import StageError

PARALLELISMS = ("ddp", "fsdp")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_position_embeddings: int


# Llama-architecture sizes. `tiny` trains on 2 CPU cores in about a minute (~1.9 M
# parameters with a 512-token vocabulary); the others are for GPUs. Every preset keeps a
# head size of 64 or 128: vLLM's CPU attention kernels support only some head sizes
# (32, 64, 80, 96, 112, 128, ...), and a model vLLM cannot serve is no use to the pipeline.
MODEL_PRESETS: dict[str, ModelShape] = {
    "tiny": ModelShape(192, 4, 3, 3, 512, 256),
    "125m": ModelShape(768, 12, 12, 12, 2048, 2048),
    "1b": ModelShape(2048, 16, 32, 8, 5632, 2048),
}


@dataclass
class TrainConfig:
    # Size preset from MODEL_PRESETS, ignored when `base_model_dir` is set.
    model_preset: str = "tiny"
    # Local HF model directory to start from (continued training / fine-tuning).
    base_model_dir: str | None = None
    # Optimizer steps to run in total (a resumed run counts the steps already done).
    max_steps: int = 200
    # Sequences per optimizer step across all ranks and accumulation micro-steps.
    global_batch_size: int = 16
    # Sequences per forward/backward on one rank; accumulation fills the rest.
    micro_batch_size: int = 8
    # Tokens per training sequence (packed, no padding). <= the model's context.
    seq_len: int = 128
    learning_rate: float = 3e-3
    min_learning_rate: float = 3e-4
    warmup_steps: int = 20
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    grad_clip_norm: float = 1.0
    seed: int = 1234
    # "ddp" replicates the model; "fsdp" shards it with FSDP2 (`fully_shard`).
    parallelism: str = "ddp"
    # "bf16" autocast needs a CUDA device; CPU runs use "fp32".
    mixed_precision: str = "fp32"
    # torch.compile the model (GPU only; on CPU it costs more than it saves at this size).
    compile: bool = False
    # Save a checkpoint every this many steps (and at the end).
    checkpoint_every_steps: int = 50
    # Where checkpoints go; None -> <SHIPYARD_HOME>/checkpoints/<run key>, so a retried task
    # with the same inputs resumes. On a cluster point it at a shared volume.
    checkpoint_dir: str | None = None
    # Newest verified checkpoints kept on disk.
    keep_checkpoints: int = 2
    # Validation loss every this many steps (and at the end), over this many batches.
    eval_every_steps: int = 50
    eval_batches: int = 4
    # A rank that does not answer a collective within this many seconds fails the job.
    collective_timeout_seconds: int = 300
    # MLflow experiment that receives the training run.
    mlflow_experiment: str = "shipyard"
    # generation_config.max_new_tokens written with the model (capped to the context).
    max_new_tokens: int = 32

    def __post_init__(self) -> None:
        def bad(field: str, rule: str) -> StageError:
            return StageError(
                "CONFIG_INVALID", f"train.{field}={getattr(self, field)!r}: {rule}"
            )

        if self.base_model_dir is None and self.model_preset not in MODEL_PRESETS:
            raise bad("model_preset", f"must be one of {sorted(MODEL_PRESETS)}.")
        if self.parallelism not in PARALLELISMS:
            raise bad("parallelism", f"must be one of {list(PARALLELISMS)}.")
        if self.mixed_precision not in PRECISIONS:
            raise bad("mixed_precision", f"must be one of {list(PRECISIONS)}.")
        for name in ("max_steps", "global_batch_size", "micro_batch_size", "seq_len",
                     "checkpoint_every_steps", "keep_checkpoints", "eval_every_steps",
                     "eval_batches", "collective_timeout_seconds", "max_new_tokens"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be > 0.")
        if self.warmup_steps < 0:
            raise bad("warmup_steps", "must be >= 0.")
        if not 0 < self.min_learning_rate <= self.learning_rate:
            raise bad("min_learning_rate", "must be in (0, learning_rate].")
        if self.global_batch_size % self.micro_batch_size:
            raise bad("global_batch_size",
                      f"must be a multiple of micro_batch_size={self.micro_batch_size}.")
        shape = MODEL_PRESETS.get(self.model_preset)
        if self.base_model_dir is None and shape and self.seq_len > shape.max_position_embeddings:
            raise bad("seq_len", f"exceeds the {self.model_preset} context "
                                 f"({shape.max_position_embeddings} tokens).")

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-steps per optimizer step on each rank; the global batch stays fixed."""
        per_rank, rest = divmod(self.global_batch_size, world_size)
        if rest or per_rank % self.micro_batch_size:
            raise StageError(
                "CONFIG_INVALID",
                f"train.global_batch_size={self.global_batch_size} cannot be split over "
                f"{world_size} ranks in micro-batches of {self.micro_batch_size}: it must be a "
                f"multiple of world_size x micro_batch_size = {world_size * self.micro_batch_size}."
                " Change global_batch_size, micro_batch_size or nproc_per_node.",
            )
        return per_rank // self.micro_batch_size

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()
