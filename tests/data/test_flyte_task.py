"""The `validate_data` Flyte task in flytekit local execution, the way `pyflyte run` calls it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.cost import CostConfig
from common.digests import sha256_file, sha256_tree
from common.errors import StageError
from data.config import DataConfig
from tasks.contracts import ValidatedDataset
from tasks.validate import validate_data

pytestmark = pytest.mark.integration


@pytest.fixture
def flyte_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "flyte-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHIPYARD_HOME", str(home / ".shipyard"))
    monkeypatch.setenv("FLYTE_LOCAL_CACHE_ENABLED", "false")
    return home


def _digests(config: DataConfig) -> dict[str, str]:
    return {split: sha256_file(Path(path)) for split, path in config.split_paths().items()}


def test_task_refuses_a_file_that_changed_since_the_run_started(
    flyte_env: Path, small_splits: dict[str, list[dict[str, Any]]],
    write_splits: Callable[..., DataConfig],
) -> None:
    config = write_splits(small_splits)
    digests = {**_digests(config), "train": "0" * 64}
    with pytest.raises(StageError) as caught:
        validate_data(config=config, source_digests=digests, prices=CostConfig())
    assert caught.value.code == "DATA_SOURCE_CHANGED"
    assert f"sha256 {_digests(config)['train']} was read" in str(caught.value)


def test_task_returns_digests_of_the_files_it_hands_on(
    flyte_env: Path, small_splits: dict[str, list[dict[str, Any]]],
    write_splits: Callable[..., DataConfig],
) -> None:
    config = write_splits(small_splits)
    result = validate_data(config=config, source_digests=_digests(config), prices=CostConfig())

    assert isinstance(result, ValidatedDataset)
    files = Path(result.files.download())
    for split, digest in result.split_digests.items():
        assert sha256_file(files / f"{split}.jsonl") == digest
    assert sha256_tree(files / "tokenizer") == result.tokenizer_digest
    assert sha256_file(files / "validation_report.json") == result.report_digest
    assert result.split_rows == {"train": 12, "validation": 10, "eval": 10}
    # The same report the Flyte deck shows is on disk for users without a cluster.
    [report] = (flyte_env / ".shipyard" / "reports").rglob("validate_data.html")
    assert "PASSED" in report.read_text()


def test_task_publishes_the_report_when_the_data_is_rejected(
    flyte_env: Path, small_splits: dict[str, list[dict[str, Any]]],
    write_splits: Callable[..., DataConfig],
) -> None:
    small_splits["train"][3]["response"] = None
    config = write_splits(small_splits)
    with pytest.raises(StageError) as caught:
        validate_data(config=config, source_digests=_digests(config), prices=CostConfig())
    # flytekit re-raises the stage's own error type, code and message intact.
    assert caught.value.code == "DATA_VALIDATION_FAILED"
    assert "rows [3]" in str(caught.value)
    [report] = (flyte_env / ".shipyard" / "reports").rglob("validate_data.html")
    assert "FAILED" in report.read_text()
