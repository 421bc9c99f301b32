"""Fault tests share the deploy tests' real registry and tiny models, and start from a
deployment whose stable serves the module's first model version."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.model_ref import ModelToDeploy
from tests.deploy.conftest import Registry, model_dirs, no_leaked_servers, registry
from tests.deploy.scenarios import deploy, fast_config, stop_everything

__all__ = ["model_dirs", "no_leaked_servers", "registry", "stable"]


@pytest.fixture
def stable(request: pytest.FixtureRequest, registry: Registry,
           model_dirs: dict[str, Path]) -> Iterator[ModelToDeploy]:
    """Version 1 of the module's MODEL, deployed as the stable of deployment NAME."""
    v1 = registry.register(model_dirs["stable"], request.module.MODEL)
    deploy(v1, fast_config("local"), registry.settings)
    yield v1
    stop_everything(registry.settings, request.module.NAME)
