"""Reading splits: local and fsspec URIs, JSONL and Parquet, and the errors a user sees."""

from __future__ import annotations

import hashlib
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from common.errors import StageError
from data.io import read_split, sha256_location

pytestmark = pytest.mark.unit

ROWS = [{"instruction": "What is 1 + 1?", "response": "2"},
        {"instruction": "Reverse the word 'abc'.", "response": "cba"}]


def test_unknown_extension_is_refused_with_the_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("instruction,response\n")
    with pytest.raises(StageError) as caught:
        read_split("train", str(path))
    assert caught.value.code == "DATA_UNSUPPORTED_FORMAT"
    assert "data.train_path" in caught.value.message and "'.csv'" in caught.value.message
    assert ".jsonl" in caught.value.message and ".parquet" in caught.value.message


def test_missing_file_names_the_path_and_how_to_fix_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "eval.jsonl"
    with pytest.raises(StageError) as caught:
        read_split("eval", str(path))
    assert caught.value.code == "DATA_FILE_NOT_FOUND"
    assert "data.eval_path" in caught.value.message and str(path) in caught.value.message


def test_relative_paths_resolve_against_the_project_root() -> None:
    frame = read_split("eval", "data/corpus/eval.jsonl")
    assert len(frame) == 500


def test_broken_jsonl_line_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "validation.jsonl"
    path.write_text('{"instruction": "a", "response": "b"}\n{"instruction": "a", "resp\n')
    with pytest.raises(StageError) as caught:
        read_split("validation", str(path))
    assert caught.value.code == "DATA_UNPARSEABLE"
    assert f"{path} line 2" in caught.value.message


def test_a_jsonl_line_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('["What is 1 + 1?", "2"]\n')
    with pytest.raises(StageError, match="line 1: expected a JSON object, got list"):
        read_split("train", str(path))


def test_corrupt_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(StageError, match="not a readable Parquet file") as caught:
        read_split("train", str(path))
    assert caught.value.code == "DATA_UNPARSEABLE"


def test_parquet_rows_come_back_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    # A saved non-default index must not leak into row numbers used by the report.
    pd.DataFrame(ROWS, index=[10, 20]).to_parquet(path)
    frame = read_split("train", str(path))
    assert list(frame.index) == [0, 1]
    assert frame["response"].tolist() == ["2", "cba"]


def test_object_store_uri_is_read_and_hashed_through_fsspec() -> None:
    # fsspec's in-memory filesystem stands in for s3:// or gs://: same code path, no network.
    uri = "memory://shipyard-test/eval.jsonl"
    payload = b"".join(
        f'{{"instruction": "{r["instruction"]}", "response": "{r["response"]}"}}\n'.encode()
        for r in ROWS
    )
    with fsspec.open(uri, "wb") as handle:
        handle.write(payload)
    try:
        assert read_split("eval", uri).to_dict("records") == ROWS
        assert sha256_location(uri) == hashlib.sha256(payload).hexdigest()
    finally:
        fsspec.filesystem("memory").rm("/shipyard-test", recursive=True)


def test_missing_object_store_file_is_reported() -> None:
    with pytest.raises(StageError) as caught:
        read_split("train", "memory://shipyard-test/absent.jsonl")
    assert caught.value.code == "DATA_FILE_NOT_FOUND"
