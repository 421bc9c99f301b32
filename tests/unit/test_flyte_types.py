"""Importing the workflow derives each dataclass's Flyte literal type once, and the memoized
type is the one flytekit derives itself."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from common.settings import PROJECT_ROOT

pytestmark = pytest.mark.unit

COUNT = textwrap.dedent("""
    import collections, json
    from flytekit.core.type_engine import DataclassTransformer
    derived = collections.Counter()
    original = DataclassTransformer.get_literal_type
    def counting(self, t):
        derived[repr(t)] += 1
        return original(self, t)
    DataclassTransformer.get_literal_type = counting   # under the memo, once it is installed
    import workflows.pipeline
    print(json.dumps(derived))
""")


def test_each_dataclass_is_derived_once_when_the_workflow_loads() -> None:
    out = subprocess.run([sys.executable, "-c", COUNT], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    import json

    derived = json.loads(out.strip().splitlines()[-1])
    assert any("DeployConfig" in name for name in derived), derived
    assert set(derived.values()) == {1}, derived


def test_the_memoized_literal_type_is_flytekits_own_and_never_shared() -> None:
    from flytekit.core.type_engine import DataclassTransformer, TypeEngine

    import tasks.flyte_adapter  # noqa: F401  (installs the memo)
    from common.cost import CostConfig
    from deploy.config import DeployConfig
    from tasks.contracts import RegisteredModel
    from training.config import TrainConfig

    memoized = DataclassTransformer.get_literal_type
    assert getattr(memoized, "shipyard_memoized", False)
    derive = memoized.flytekit_original
    for dataclass_type in (DeployConfig, TrainConfig, CostConfig, RegisteredModel):
        transformer = TypeEngine.get_transformer(dataclass_type)
        first = transformer.get_literal_type(dataclass_type)
        again = transformer.get_literal_type(dataclass_type)
        assert first is not again  # a copy per caller: nobody can change another's type
        assert first.to_flyte_idl() == again.to_flyte_idl() == \
            derive(transformer, dataclass_type).to_flyte_idl()
