"""The run's prices reach every stage as a typed input (a cluster pod shares no directory with
the run), and never take part in a cached stage's cache key."""

from __future__ import annotations

import pytest

from common.cost import CostConfig
from tasks.deploy_canary import deploy_canary
from tasks.evaluate import evaluate
from tasks.register import register
from tasks.train import train, train_1_gpu, train_2_nodes_8_gpus, train_8_gpus
from tasks.validate import validate_data

pytestmark = pytest.mark.unit

STAGES = [validate_data, train, train_1_gpu, train_8_gpus, train_2_nodes_8_gpus, evaluate,
          register, deploy_canary]


@pytest.mark.parametrize("stage", STAGES, ids=lambda t: t.name.rsplit(".", 1)[-1])
def test_every_stage_takes_the_prices_and_no_cache_key_holds_them(stage: object) -> None:
    inputs = stage.python_interface.inputs  # type: ignore[attr-defined]
    assert inputs["prices"] is CostConfig
    metadata = stage.metadata  # type: ignore[attr-defined]
    if metadata.cache:
        assert metadata.cache_ignore_input_vars == ("prices",)


def test_the_workflow_wires_the_resolved_prices_into_every_stage() -> None:
    from workflows.pipeline import shipyard_pipeline

    bound = {}
    for node in shipyard_pipeline.nodes:
        for binding in node.bindings:
            if binding.var == "prices":
                promise = binding.binding.promise
                bound[node.flyte_entity.name.rsplit(".", 1)[-1]] = (
                    promise.node_id, promise.var)
    resolve = [n.id for n in shipyard_pipeline.nodes
               if n.flyte_entity.name.endswith("resolve_config")]
    assert set(bound) == {"validate_data", "train", "evaluate", "register", "deploy_canary"}
    assert set(bound.values()) == {(resolve[0], "cost")}
