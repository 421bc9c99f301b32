"""`train` stage: a Flyte Elastic task (torchrun semantics) over `run_training`.

Locally `nproc_per_node` CPU processes on gloo; on a cluster the same function runs on GPU
nodes with NCCL, one task per topology (workflows/pipeline.py picks one and sets resources):

- `train`: 2 CPU processes (the tiny preset, local runs);
- `train_1_gpu`, `train_8_gpus`: one node, a plain pod (Elastic with nnodes=1);
- `train_2_nodes_8_gpus`: a PyTorchJob of 2 workers x 8 processes, run by the Kubeflow training
  operator (Elastic with nnodes=2 is serialized as a PyTorchJob with an elastic policy).

Each topology is its own task because the Elastic config is fixed on the task object: a node
override (`with_overrides(task_config=...)`) would mutate the one shared `train` task for every
workflow, and the container resolves the task by name, so it would not see the override at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flytekit import Cache, Resources, task
from flytekit.types.directory import FlyteDirectory
from flytekitplugins.kfpytorch import Elastic

from common.cost import CostConfig
from common.digests import sha256_file
from common.errors import StageError
from common.fs import directory_bytes
from common.html import format_bytes
from common.redact import redact_text
from common.settings import Settings, load_settings
from common.token_file import HEADER_SUFFIX, TOKENS_SUFFIX
from tasks import timeouts
from tasks.base_model import with_base_model_dir
from tasks.caching import COMMON, code_version
from tasks.contracts import BaseModel, TrainedModel, ValidatedDataset
from tasks.flyte_adapter import MLFLOW_SECRETS, STAGE_DECK_FIELDS
from tasks.shell import StageRun, stage_shell
from training.config import TrainConfig
from training.storage import is_object_store_uri

if TYPE_CHECKING:  # torch and transformers load only when a train task runs, not at import
    from training.loop import TrainResult

# Local default: 2 worker processes (the tiny preset's global batch splits evenly over 2).
LOCAL_ELASTIC = Elastic(nnodes=1, nproc_per_node=2, max_restarts=0, monitor_interval=1,
                        increase_shared_mem=False)  # /dev/shm: `shared_memory=True` below


def elastic_for(config: TrainConfig) -> Elastic:
    """The launcher settings a TrainConfig asks for (nodes, processes, rendezvous timeouts).

    A task's Elastic is fixed when the workflow is registered, while the preset is read when
    it runs: the GPU tasks below spell theirs out, a test checks that each equals
    `elastic_for(<its preset>)`, and every worker checks train.nnodes/nproc_per_node against
    what it was started with (training.distributed.check_topology)."""
    return Elastic(nnodes=config.nnodes, nproc_per_node=config.nproc_per_node or 1,
                   max_restarts=0, rdzv_configs=config.rdzv_configs(),
                   increase_shared_mem=False)


# configs/gpu-1x.yaml, configs/gpu-8x.yaml, configs/gpu-2x8.yaml (checked by
# tests/training/test_multinode_package.py). max_restarts=0: a failed node fails the attempt;
# Flyte's retries start a new one, which resumes from the checkpoint on shared storage.
_RDZV_ONE_NODE = {"join_timeout": 600, "last_call_timeout": 30, "close_timeout": 30}
ONE_GPU = Elastic(nnodes=1, nproc_per_node=1, max_restarts=0, rdzv_configs=_RDZV_ONE_NODE,
                  increase_shared_mem=False)
EIGHT_GPUS = Elastic(nnodes=1, nproc_per_node=8, max_restarts=0, rdzv_configs=_RDZV_ONE_NODE,
                     increase_shared_mem=False)
TWO_NODES_EIGHT_GPUS = Elastic(
    nnodes=2, nproc_per_node=8, max_restarts=0, increase_shared_mem=False,
    rdzv_configs={"join_timeout": 900, "last_call_timeout": 60, "close_timeout": 60})


def checkpoint_run_key(config: TrainConfig, dataset: ValidatedDataset,
                       base_digest: str | None = None) -> str:
    """Same config, same data and same base model -> same key -> a retried task finds its
    checkpoints (and a run from another base never resumes from them)."""
    fields = json.loads(config.to_json())
    fields.pop("checkpoint_dir")
    parts: list[object] = [fields, dataset.split_digests, dataset.tokenizer_digest]
    if base_digest is not None:  # absent for models trained from scratch: their keys stay
        parts.append(base_digest)
    payload = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def verify_dataset_files(dataset_dir: Path, dataset: ValidatedDataset) -> None:
    """Fail closed if the files received are not the ones validation vouched for: the split
    files by `split_digests`, and every token file present (or recorded) by
    `token_file_digests` (training reads only token files, so one validate_data did not
    record is refused; a dataset without any cannot train and fails there)."""
    expected = {f"{split}.jsonl": dataset.split_digests.get(split)
                for split in ("train", "validation")}
    present = {p.name for p in dataset_dir.glob(f"*{TOKENS_SUFFIX}")}
    present |= {p.name for p in dataset_dir.glob(f"*{HEADER_SUFFIX}")}
    expected |= {name: dataset.token_file_digests.get(name)
                 for name in sorted(present | set(dataset.token_file_digests))}
    for name, digest in expected.items():
        path = dataset_dir / name
        found = sha256_file(path) if path.is_file() else "missing"
        if found != digest:
            raise StageError(
                "TRAIN_DATASET_DIGEST_MISMATCH",
                f"dataset file {path}: sha256 {found} != {digest or 'none recorded'} "
                "recorded by validate_data. Re-run validate_data; do not edit its outputs.",
            )


def to_trained_model(result: TrainResult, config: TrainConfig,
                     dataset: ValidatedDataset) -> TrainedModel:
    return TrainedModel(
        model_dir=FlyteDirectory(str(result.model_dir)),
        model_digest=result.model_digest,
        dataset_digests=dict(dataset.split_digests),
        metrics=result.metrics,
        loss_curve=result.loss_curve,
        config=config,
        config_digest=config.digest(),
        mlflow_run_id=result.mlflow_run_id,
    )


def _is_rank_zero() -> bool:
    # torchrun sets RANK in each worker; a plain call (no launcher) is rank 0.
    return os.environ.get("RANK", "0") == "0"


def _train_task(elastic: Elastic) -> Any:
    """The @task decorator of every train task; only the launcher topology differs (the GPU
    resources are node overrides in workflows/pipeline.py)."""
    return task(
        timeout=timeouts.TRAIN,
        task_config=elastic,
        cache=Cache(version=code_version(*COMMON, "tasks/train.py", "tasks/base_model.py",
                                         "training", packages=("torch", "transformers",
                                                               "safetensors", "peft")),
                    ignored_inputs=("prices",)),
        retries=2,
        interruptible=True,
        requests=Resources(cpu="2", mem="8Gi"),
        enable_deck=True,
        deck_fields=STAGE_DECK_FIELDS,
        shared_memory=True,
        secret_requests=MLFLOW_SECRETS,  # the training run's metrics and artifacts
    )


def _checkpoint_location(config: TrainConfig, dataset: ValidatedDataset,
                         checkpoints_home: Path, base: BaseModel | None) -> Path | str:
    """An object-store URI as given (s3://...), else a local directory."""
    if is_object_store_uri(config.checkpoint_dir):
        return str(config.checkpoint_dir)
    key = checkpoint_run_key(config, dataset, base.model_digest if base is not None else None)
    return Path(config.checkpoint_dir or checkpoints_home / key)


@_train_task(LOCAL_ELASTIC)
def train(dataset: ValidatedDataset, config: TrainConfig, prices: CostConfig,
          base: BaseModel | None = None) -> TrainedModel:
    """`base` (from provision_base) is the model to fine-tune; None trains from scratch."""
    from training.loop import TrainPaths, run_training

    with stage_shell("train", "Training", prices, publishes=_is_rank_zero()) as run:
        settings = load_settings()
        checkpoint_dir = _checkpoint_location(config, dataset, settings.checkpoints_dir, base)
        output_dir = Path(tempfile.mkdtemp(prefix="shipyard-model-")) / "model"
        config = with_base_model_dir(config, base, "train")
        dataset_dir = Path(dataset.files.download())
        verify_dataset_files(dataset_dir, dataset)
        result = run_training(config, TrainPaths(
            dataset_dir=dataset_dir, output_dir=output_dir, checkpoint_dir=checkpoint_dir,
            mlflow_tracking_uri=settings.mlflow_tracking_uri,
            mlflow_artifact_root=settings.mlflow_artifact_root,
        ))
        run.cost.mlflow_run_id = result.mlflow_run_id
        run.cost.mlflow_tracking_uri = settings.mlflow_tracking_uri
        if result.rank == 0:  # only rank 0's return value is kept by Elastic
            _publish_rank_zero(run, result, settings, checkpoint_dir)
        return to_trained_model(result, config, dataset)


def _publish_rank_zero(run: StageRun, result: TrainResult, settings: Settings,
                       checkpoint_dir: Path | str) -> None:
    from training.report import overview_facts, training_report_html

    facts = {
        "model digest": f"sha256:{result.model_digest}",
        "model size": format_bytes(directory_bytes(result.model_dir)),
        "model dir": str(result.model_dir),
        "MLflow run": result.mlflow_run_id, "MLflow store": settings.mlflow_tracking_uri,
        "checkpoints": str(checkpoint_dir),
        "resumed from step": str(result.resumed_from_step),
    }
    run.publish(training_report_html(result.metrics, result.loss_curve, result.val_losses, facts),
                facts=overview_facts(result.metrics, result.loss_curve, result.val_losses,
                                     facts))
    print(f"[shipyard] model: {result.model_dir} (digest {result.model_digest})\n"
          f"[shipyard] MLflow run {result.mlflow_run_id} in "
          f"{redact_text(settings.mlflow_tracking_uri)}",
          flush=True)


@_train_task(ONE_GPU)
def train_1_gpu(dataset: ValidatedDataset, config: TrainConfig,
                prices: CostConfig,
                base: BaseModel | None = None) -> TrainedModel:
    """`train` on one GPU (gpu-1x preset)."""
    return train.task_function(dataset, config, prices, base)


@_train_task(EIGHT_GPUS)
def train_8_gpus(dataset: ValidatedDataset, config: TrainConfig,
                 prices: CostConfig,
                 base: BaseModel | None = None) -> TrainedModel:
    """`train` on eight GPUs of one node (gpu-8x preset)."""
    return train.task_function(dataset, config, prices, base)


@_train_task(TWO_NODES_EIGHT_GPUS)
def train_2_nodes_8_gpus(dataset: ValidatedDataset, config: TrainConfig,
                         prices: CostConfig,
                         base: BaseModel | None = None) -> TrainedModel:
    """`train` as a PyTorchJob: 2 nodes x 8 GPUs (gpu-2x8 preset, HSDP)."""
    return train.task_function(dataset, config, prices, base)
