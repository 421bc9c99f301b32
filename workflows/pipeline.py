"""The Shipyard pipeline: validate_data -> train -> evaluate -> register -> deploy_canary.

Flyte runs a workflow body at registration time, not at run time: this file only wires typed
stage outputs to inputs. Run it locally with

    pyflyte run workflows/pipeline.py shipyard_pipeline --preset tiny

and on a cluster with ``pyflyte run --remote ...`` (see the README).
"""

from __future__ import annotations

import atexit
import gc
from typing import Any

from flytekit import LaunchPlan, Resources, workflow
from flytekit.core.base_task import PythonTask
from flytekit.core.promise import Promise
from flytekit.extras.accelerators import H100

from tasks.base_model import provision_base
from tasks.contracts import DeploymentResult
from tasks.deploy_canary import deploy_canary
from tasks.evaluate import champion_reference, evaluate
from tasks.import_base import import_base_champion
from tasks.register import register
from tasks.resolve import resolve_config
from tasks.train import train, train_1_gpu, train_2_nodes_8_gpus, train_8_gpus
from tasks.validate import validate_data

# The process that imports this module (`pyflyte run`, `pyflyte package`) holds torch, flytekit,
# MLflow and the rest when it exits, and CPython's last garbage collection over all of them took
# about 2 s of every local run, after the pipeline's last line. Freezing the heap at exit skips
# that collection; the atexit handlers registered before this one (logging's flush, MLflow's,
# flytekit's) still run after it, and everything the stages write is closed by then.
atexit.register(gc.freeze)


def _on_gpus(count: int) -> dict[str, Any]:
    """Node overrides that give each train worker pod `count` H100s (one process per GPU:
    the task's Elastic nproc_per_node). For a PyTorchJob they apply to every worker."""
    return {
        "requests": Resources(cpu=str(8 * count), mem=f"{64 * count}Gi", gpu=str(count)),
        "limits": Resources(gpu=str(count)),
        "accelerator": H100,
    }


def _wire_stages(preset: str, overrides: list[str], train_task: PythonTask = train,
                 train_overrides: dict[str, Any] | None = None) -> Promise:
    """The five stages, output to input: the one place a stage is added or rewired.

    Called inside each @workflow body, so it runs when Flyte compiles the workflow and
    builds its nodes; `train_task` is the train task of the topology (tasks/train.py),
    `train_overrides` are node overrides for it (its resources)."""
    cfg = resolve_config(preset=preset, overrides=overrides)
    # None unless the preset fine-tunes a pretrained model (base.source)
    base = provision_base(config=cfg.base, source_digest=cfg.base_source_digest)
    # `cfg.cost` (prices) is a typed input of every stage, so a pod prices its own use; the
    # cached stages leave it out of their cache key (a price change re-runs nothing)
    dataset = validate_data(config=cfg.data, source_digests=cfg.source_digests, prices=cfg.cost,
                            base=base)
    model = train_task(dataset=dataset, config=cfg.train, prices=cfg.cost, base=base)
    if train_overrides is not None:
        model = model.with_overrides(**train_overrides)
    # the base becomes the first champion (a no-op without a base or once a champion exists),
    # so the first fine-tune is gated, and canaried, against the model it started from
    imported = import_base_champion(base=base, register_config=cfg.register,
                                    deploy_config=cfg.deploy)
    champion = champion_reference(config=cfg.eval)  # part of evaluate's cache key
    model >> champion  # read after training, just before evaluate compares against it
    imported >> champion
    report = evaluate(model=model, dataset=dataset, config=cfg.eval, champion=champion,
                      prices=cfg.cost)
    registered = register(model=model, dataset=dataset, config=cfg.register, prices=cfg.cost,
                          evaluation=report, base=base)
    return deploy_canary(model=registered, config=cfg.deploy, prices=cfg.cost)


@workflow
def shipyard_pipeline(preset: str = "tiny", overrides: list[str] = []) -> DeploymentResult:  # noqa: B006
    return _wire_stages(preset, overrides)


@workflow
def shipyard_pipeline_gpu(
    preset: str = "gpu-1x", overrides: list[str] = []  # noqa: B006
) -> DeploymentResult:
    """One H100 (gpu-1x preset): Elastic with one NCCL worker."""
    return _wire_stages(preset, overrides, train_1_gpu, train_overrides=_on_gpus(1))


@workflow
def shipyard_pipeline_gpu_8x(
    preset: str = "gpu-8x", overrides: list[str] = []  # noqa: B006
) -> DeploymentResult:
    """Eight H100s on one node (gpu-8x preset): Elastic with eight workers, FSDP2."""
    return _wire_stages(preset, overrides, train_8_gpus, train_overrides=_on_gpus(8))


@workflow
def shipyard_pipeline_gpu_multinode(
    preset: str = "gpu-2x8", overrides: list[str] = []  # noqa: B006
) -> DeploymentResult:
    """Two nodes x eight H100s (gpu-2x8 preset): a PyTorchJob of 2 workers run by the Kubeflow
    training operator, HSDP (shard within a node, replicate across nodes), checkpoints on
    object storage (train.checkpoint_dir: s3://...)."""
    return _wire_stages(preset, overrides, train_2_nodes_8_gpus, train_overrides=_on_gpus(8))


# Launch plan CI triggers on main after registering (see .github/workflows).
tiny_nightly = LaunchPlan.get_or_create(
    shipyard_pipeline, name="shipyard_tiny_nightly", default_inputs={"preset": "tiny"}
)
