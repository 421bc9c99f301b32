"""Nothing waits forever: every Flyte task of the pipeline declares a timeout; no task
spends its run on a `pip freeze` deck."""

from __future__ import annotations

import importlib
import pkgutil
from datetime import timedelta

import pytest
from flytekit.core.base_task import PythonTask

import tasks

pytestmark = pytest.mark.unit


def _stage_tasks() -> dict[str, PythonTask]:
    """Every task defined in the `tasks` package, by dotted name."""
    found = {}
    for module_info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{module_info.name}")
        found.update({f"{module.__name__}.{name}": value for name, value in vars(module).items()
                      if isinstance(value, PythonTask) and value.__module__ == module.__name__})
    return found


def test_every_task_declares_a_timeout() -> None:
    found = _stage_tasks()
    assert {"tasks.train.train", "tasks.validate.validate_data", "tasks.evaluate.evaluate",
            "tasks.register.register", "tasks.deploy_canary.deploy_canary",
            "tasks.resolve.resolve_config"} <= set(found)
    for name, task in found.items():
        timeout = task.metadata.timeout
        assert isinstance(timeout, timedelta) and timeout > timedelta(0), name


def test_no_task_renders_the_pip_freeze_deck() -> None:
    """flytekit's default deck fields include DEPENDENCIES, which runs `pip list` and `pip
    freeze` in subprocesses on every execution of the task (seconds on 2 cores, in every
    re-run of the uncached stages, plus pip's upgrade notice on the console)."""
    from flytekit.deck import DeckField

    with_decks = {name: task for name, task in _stage_tasks().items() if task.enable_deck}
    assert {"tasks.train.train", "tasks.validate.validate_data", "tasks.evaluate.evaluate",
            "tasks.register.register", "tasks.deploy_canary.deploy_canary"} <= set(with_decks)
    for name, task in with_decks.items():
        assert DeckField.DEPENDENCIES not in task.deck_fields, name
        assert DeckField.TIMELINE in task.deck_fields, name
