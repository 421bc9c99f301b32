"""`TrainConfig` and the model size presets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from common.errors import StageError
from training.storage import is_object_store_uri

PARALLELISMS = ("ddp", "fsdp", "hsdp")
NCCL_DEBUG_LEVELS = ("VERSION", "WARN", "INFO", "TRACE")
PRECISIONS = ("fp32", "bf16")
FINETUNE_METHODS = ("full", "lora")
# Llama's attention and MLP projections: LoRA on all of them is the usual recipe (QLoRA paper,
# section 4: adapting every linear layer is what matches full fine-tuning quality).
LLAMA_LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj"]


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
    # "full" trains every weight; "lora" freezes the base model (needs base_model_dir) and
    # trains low-rank adapters (PEFT) on `lora_target_modules`, merged into the exported model.
    finetune: str = "full"
    # LoRA rank r: each adapted weight W (out, in) gets B (out, r) @ A (r, in).
    lora_rank: int = 16
    # LoRA scaling numerator: the adapter's update is scaled by lora_alpha / lora_rank.
    lora_alpha: int = 32
    # Dropout on the adapter's input (training only), in [0, 1).
    lora_dropout: float = 0.05
    # Names of the linear modules that get adapters (the last component of the module path:
    # "q_proj" adapts every layer's self_attn.q_proj). Checked against the base model.
    lora_target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEAR_MODULES))
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
    # "ddp" replicates the model; "fsdp" shards it with FSDP2 (`fully_shard`) over all ranks;
    # "hsdp" shards it within a node and replicates it across nodes (a 2-D DeviceMesh
    # (nnodes, world_size / nnodes) handed to `fully_shard(mesh=...)`).
    parallelism: str = "ddp"
    # Nodes the job runs on (torchrun --nnodes; the PyTorchJob's worker replicas). Checked
    # against the launcher at start-up. > 1 needs checkpoint_dir on shared object storage.
    nnodes: int = 1
    # Worker processes per node (one per GPU); None: whatever the launcher started. When set,
    # the launcher's world size must equal nnodes x nproc_per_node.
    nproc_per_node: int | None = None
    # "bf16" autocast needs a CUDA device; CPU runs use "fp32".
    mixed_precision: str = "fp32"
    # torch.compile the model (GPU only; on CPU it costs more than it saves at this size).
    compile: bool = False
    # Save a checkpoint every this many steps (and at the end).
    checkpoint_every_steps: int = 50
    # Where checkpoints go: a local path, or an fsspec object-store URI (s3://bucket/prefix,
    # gs://..., az://...) that every node reads and writes. None -> <SHIPYARD_HOME>/checkpoints/
    # <run key>, so a retried task with the same inputs resumes. Required, as a URI, when
    # nnodes > 1: a retried multi-node job may land on other nodes and must find it.
    checkpoint_dir: str | None = None
    # Newest verified checkpoints kept on disk.
    keep_checkpoints: int = 2
    # Validation loss every this many steps (and at the end), over this many batches.
    eval_every_steps: int = 50
    eval_batches: int = 4
    # A rank that does not answer a collective within this many seconds fails the job.
    collective_timeout_seconds: int = 300
    # Rendezvous (torch elastic, c10d backend): how long the nodes wait for each other to
    # join, how long a rendezvous stays open for late nodes once the minimum has joined, and
    # how long it waits for all to leave. Read by the launcher, not by the training code: the
    # Flyte task's Elastic(rdzv_configs=...) (fixed when the workflow is registered, see
    # tasks/train.py) and torchrun --rdzv-conf (see `rdzv_configs`).
    rdzv_join_timeout_seconds: int = 600
    rdzv_last_call_timeout_seconds: int = 30
    rdzv_close_timeout_seconds: int = 30
    # NCCL settings, exported to the environment before the process group starts (None
    # leaves whatever the node's environment has). NCCL_SOCKET_IFNAME: the network interface
    # NCCL's bootstrap and socket transport use (e.g. "eth0", "^lo,docker").
    nccl_socket_ifname: str | None = None
    # NCCL_IB_DISABLE: true forces TCP sockets instead of InfiniBand/RoCE.
    nccl_ib_disable: bool | None = None
    # NCCL_DEBUG: one of VERSION, WARN, INFO, TRACE.
    nccl_debug: str | None = None
    # TORCH_NCCL_ASYNC_ERROR_HANDLING: 0 off, 1 abort the communicator and tear down the
    # process on a timed-out or failed collective, 2 only clean up, 3 tear down without
    # clean-up (torch's default). With 1 or 3 a dead peer fails the job after
    # collective_timeout_seconds instead of hanging it.
    nccl_async_error_handling: int | None = None
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
                     "eval_batches", "collective_timeout_seconds", "max_new_tokens", "nnodes",
                     "rdzv_join_timeout_seconds", "rdzv_last_call_timeout_seconds",
                     "rdzv_close_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be > 0.")
        self._check_topology(bad)
        self._check_finetune(bad)
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

    def _check_finetune(self, bad: Callable[[str, str], StageError]) -> None:
        if self.finetune not in FINETUNE_METHODS:
            raise bad("finetune", f"must be one of {list(FINETUNE_METHODS)}.")
        if self.finetune == "lora" and self.base_model_dir is None:
            raise bad("finetune", "LoRA adapts a pretrained model, so it needs "
                      "train.base_model_dir. Set train.base_model_dir to a local HF model "
                      "directory, or use finetune: full to train the preset from scratch.")
        if self.lora_rank <= 0:
            raise bad("lora_rank", "must be > 0 (8 to 64 is usual).")
        if self.lora_alpha <= 0:
            raise bad("lora_alpha", "must be > 0 (twice lora_rank is usual).")
        if not 0 <= self.lora_dropout < 1:
            raise bad("lora_dropout", "must be in [0, 1).")
        names = self.lora_target_modules
        if not names or any(not isinstance(n, str) or not n.strip() for n in names):
            raise bad("lora_target_modules", "must be a non-empty list of linear module names, "
                      f"e.g. {LLAMA_LINEAR_MODULES}.")
        if len(set(names)) != len(names):
            raise bad("lora_target_modules", "lists a module twice; name each module once.")

    def _check_topology(self, bad: Callable[[str, str], StageError]) -> None:
        if self.nproc_per_node is not None:
            if self.nproc_per_node <= 0:
                raise bad("nproc_per_node", "must be > 0 (or unset).")
            self.accumulation_steps(self.nnodes * self.nproc_per_node)
        if self.nnodes > 1 and not is_object_store_uri(self.checkpoint_dir):
            raise bad("checkpoint_dir", f"must be an object-store URI (s3://bucket/prefix, "
                      f"gs://..., az://...) when train.nnodes={self.nnodes} > 1: every node "
                      "writes its shards there and a retried job, maybe on other nodes, resumes "
                      "from it. A node-local path would leave each node a torn checkpoint. Set "
                      "train.checkpoint_dir to a bucket prefix all nodes can write.")
        if self.rdzv_last_call_timeout_seconds > self.rdzv_join_timeout_seconds:
            raise bad("rdzv_last_call_timeout_seconds",
                      f"must be <= rdzv_join_timeout_seconds={self.rdzv_join_timeout_seconds}.")
        if self.nccl_debug is not None and self.nccl_debug not in NCCL_DEBUG_LEVELS:
            raise bad("nccl_debug", f"must be one of {list(NCCL_DEBUG_LEVELS)} (or unset).")
        if self.nccl_async_error_handling not in (None, 0, 1, 2, 3):
            raise bad("nccl_async_error_handling", "must be 0, 1, 2 or 3 (or unset).")
        if self.nccl_socket_ifname is not None and not self.nccl_socket_ifname.strip():
            raise bad("nccl_socket_ifname", "must name an interface (e.g. eth0), or be unset.")

    def rdzv_configs(self) -> dict[str, int]:
        """torch elastic's rendezvous settings (Elastic(rdzv_configs=...), torchrun --rdzv-conf)."""
        return {"join_timeout": self.rdzv_join_timeout_seconds,
                "last_call_timeout": self.rdzv_last_call_timeout_seconds,
                "close_timeout": self.rdzv_close_timeout_seconds}

    def nccl_environment(self) -> dict[str, str]:
        """The NCCL variables this config sets (the unset ones are left to the node)."""
        values = {
            "NCCL_SOCKET_IFNAME": self.nccl_socket_ifname,
            "NCCL_IB_DISABLE": None if self.nccl_ib_disable is None
            else str(int(self.nccl_ib_disable)),
            "NCCL_DEBUG": self.nccl_debug,
            "TORCH_NCCL_ASYNC_ERROR_HANDLING": None if self.nccl_async_error_handling is None
            else str(self.nccl_async_error_handling),
        }
        return {k: v for k, v in values.items() if v is not None}

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
