"""Nothing waits forever: every Flyte task of the pipeline declares a timeout."""

from __future__ import annotations

import importlib
import pkgutil
from datetime import timedelta

import pytest
from flytekit.core.base_task import PythonTask

import tasks

pytestmark = pytest.mark.unit


def test_every_task_declares_a_timeout() -> None:
    found = {}
    for module_info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{module_info.name}")
        found.update({f"{module.__name__}.{name}": value for name, value in vars(module).items()
                      if isinstance(value, PythonTask) and value.__module__ == module.__name__})
    assert {"tasks.train.train", "tasks.validate.validate_data", "tasks.evaluate.evaluate",
            "tasks.register.register", "tasks.deploy_canary.deploy_canary",
            "tasks.resolve.resolve_config"} <= set(found)
    for name, task in found.items():
        timeout = task.metadata.timeout
        assert isinstance(timeout, timedelta) and timeout > timedelta(0), name
