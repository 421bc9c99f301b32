"""Shared fixtures: every test runs with its own SHIPYARD_HOME/HOME, MLflow store and no
Flyte cache, so tests never see each other's state or the developer's ~/.shipyard."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.settings import PROJECT_ROOT

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "FLYTE_LOCAL_CACHE_ENABLED": "false",
}


# Every test is in exactly the tiers its markers name (CONVENTIONS.md 6): `make test-fast` runs
# `-m unit`, CI `-m "not gpu"`. A test with none of these would run in CI but never in the
# fast loop, unnoticed: collection refuses it instead.
TIER_MARKERS = frozenset({"unit", "integration", "e2e", "gpu"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything, so every run checks all
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items
                if not TIER_MARKERS & {mark.name for mark in item.iter_markers()}]
    if unmarked:
        raise pytest.UsageError(
            f"{len(unmarked)} test(s) carry no tier marker ({', '.join(sorted(TIER_MARKERS))}):"
            f" mark each with @pytest.mark.<tier> or a module `pytestmark`:\n  "
            + "\n  ".join(unmarked))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHIPYARD_HOME", str(home / ".shipyard"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
    return home


def subprocess_env(home: Path) -> dict[str, str]:
    """Environment for child processes (torchrun, pyflyte) of a test."""
    tmp = home / "tmp"  # flytekit leaves flyte* dirs in TMPDIR on every local run
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, **OFFLINE_ENV, "HOME": str(home), "TMPDIR": str(tmp),
           "SHIPYARD_HOME": str(home / ".shipyard"),
           "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped corpus through the real validate stage (GX suite + tokenizer training)."""
    from data.config import DataConfig
    from data.stage import validate_dataset

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    out = tmp_path_factory.mktemp("dataset") / "validated"
    return validate_dataset(DataConfig(), out).output_dir
