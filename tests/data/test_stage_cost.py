"""A stage body records its resource use: the `validate_data` task, run as pyflyte runs it
locally, leaves non-zero CPU-seconds in its summary and in the run's cost.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.cost import CostConfig
from common.digests import sha256_file
from tasks.validate import validate_data

pytestmark = pytest.mark.integration


def test_validate_data_records_its_cpu_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    small_splits: dict[str, list[dict[str, Any]]], write_splits: Callable[..., Any],
) -> None:
    home = tmp_path / "flyte-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHIPYARD_HOME", str(home / ".shipyard"))
    monkeypatch.setenv("FLYTE_LOCAL_CACHE_ENABLED", "false")
    config = write_splits(small_splits)
    digests = {s: sha256_file(Path(p)) for s, p in config.split_paths().items()}
    validate_data(config=config, source_digests=digests, prices=CostConfig())

    [summary_file] = (home / ".shipyard" / "reports").glob("*/validate_data.summary.json")
    cost = json.loads(summary_file.read_text())["cost"]
    assert cost["cpu_seconds"] > 0
    assert cost["peak_memory_bytes"] > 0
    assert cost["gpu_seconds"] == 0 or cost["gpu_count"] > 0
    run_total = json.loads((summary_file.parent / "cost.json").read_text())
    assert run_total["stages"]["validate_data"]["cpu_seconds"] == cost["cpu_seconds"]
