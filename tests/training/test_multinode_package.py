"""The multi-node train task as a cluster receives it: serialized in-process with flytekit's
`get_serializable` (what `pyflyte package` calls for each entity; tests/e2e runs the real
`pyflyte package` over every workflow) and compared with the preset it runs.

The PyTorchJob custom carries the workers, processes per node and rendezvous backend; the
rendezvous timeouts are not part of it: the worker pod's `pyflyte-execute` passes the task's
Elastic(rdzv_configs=...) to torch elastic, so they are checked on the task object."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.models.admin.workflow import WorkflowSpec
from flytekit.models.task import Resources, TaskSpec
from flytekit.tools.translator import get_serializable

from common.config import build_config, load_preset
from tasks import train as train_tasks
from training.config import TrainConfig
from workflows import pipeline

pytestmark = pytest.mark.integration  # imports every task module (tens of seconds on 2 cores)

IMAGE = "ghcr.io/example/shipyard:test"
ResourceName = Resources.ResourceName


def _serialize(workflow: Any) -> tuple[dict[str, TaskSpec], WorkflowSpec]:
    settings = SerializationSettings(image_config=ImageConfig.auto(img_name=IMAGE))
    entities: OrderedDict[Any, Any] = OrderedDict()
    get_serializable(entities, settings, workflow)
    tasks = {v.template.id.name: v for v in entities.values() if isinstance(v, TaskSpec)}
    [spec] = [v for v in entities.values() if isinstance(v, WorkflowSpec)
              and v.template.id.name == f"{workflow.__module__}.{workflow.__name__}"]
    return tasks, spec


def _train_node_overrides(spec: WorkflowSpec, task_name: str) -> Any:
    [node] = [n for n in spec.template.nodes
              if n.task_node is not None and n.task_node.reference_id.name == task_name]
    return node.task_node.overrides


def _preset_train(preset: str) -> TrainConfig:
    return build_config(TrainConfig, "train", load_preset(preset)["train"])


@pytest.fixture(scope="module")
def multinode() -> tuple[dict[str, TaskSpec], WorkflowSpec]:
    return _serialize(pipeline.shipyard_pipeline_gpu_multinode)


def test_multinode_train_is_a_pytorchjob_with_the_presets_workers_and_processes(
    multinode: tuple[dict[str, TaskSpec], WorkflowSpec],
) -> None:
    tasks, spec = multinode
    preset = _preset_train("gpu-2x8")
    template = tasks["tasks.train.train_2_nodes_8_gpus"].template
    assert template.type == "pytorch"  # the Kubeflow PyTorchJob plugin, not a plain pod
    assert template.custom == {
        "workerReplicas": {"replicas": preset.nnodes},
        "elasticConfig": {"rdzvBackend": "c10d", "minReplicas": preset.nnodes,
                          "maxReplicas": preset.nnodes, "nprocPerNode": preset.nproc_per_node},
    }  # maxRestarts 0 is the proto default, which MessageToDict leaves out
    assert (preset.nnodes, preset.nproc_per_node, preset.parallelism) == (2, 8, "hsdp")
    # each worker pod gets its node's 8 GPUs (H100) and the CPU/memory to feed them
    overrides = _train_node_overrides(spec, "tasks.train.train_2_nodes_8_gpus")
    requests = {r.name: r.value for r in overrides.resources.requests}
    limits = {r.name: r.value for r in overrides.resources.limits}
    assert requests == {ResourceName.GPU: "8", ResourceName.CPU: "64",
                        ResourceName.MEMORY: "512Gi"}
    assert limits == {ResourceName.GPU: "8"}
    assert overrides.extended_resources.gpu_accelerator.device == "nvidia-h100"
    assert template.container.image == IMAGE


@pytest.mark.parametrize(("task_name", "preset"), [
    ("train_2_nodes_8_gpus", "gpu-2x8"), ("train_8_gpus", "gpu-8x"), ("train_1_gpu", "gpu-1x"),
])
def test_each_gpu_tasks_launcher_settings_equal_its_presets(task_name: str, preset: str) -> None:
    """The task's Elastic is fixed at registration, the preset is read at run time: they
    must agree on nodes, processes per node and rendezvous timeouts."""
    task = getattr(train_tasks, task_name)
    expected = train_tasks.elastic_for(_preset_train(preset))
    assert task.task_config == expected
    assert task.task_config.rdzv_configs == _preset_train(preset).rdzv_configs()


def test_single_node_workflows_stay_plain_pods_and_leave_the_local_task_alone() -> None:
    """One node is a plain pod (no training operator needed); compiling the GPU workflows
    must not change the 2-process task the local pipeline runs."""
    tasks, _ = _serialize(pipeline.shipyard_pipeline_gpu_8x)
    template = tasks["tasks.train.train_8_gpus"].template
    assert template.type == "python-task"
    assert template.custom is None or "workerReplicas" not in template.custom
    local = train_tasks.train.task_config
    assert (local.nnodes, local.nproc_per_node) == (1, 2)
