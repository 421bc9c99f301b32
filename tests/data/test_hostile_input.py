"""Hostile and broken split files are refused within seconds, with the input, the row and
the rule named, before any tokenizer sees a row (issue: hostile input in bounded time)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from common.errors import StageError
from data.io import ReadLimits, read_split

pytestmark = pytest.mark.unit

GOOD = json.dumps({"instruction": "What is 1 + 1?", "response": "2"}) + "\n"
# Generous for a loaded 2-core machine; each case takes milliseconds when quiet.
BOUND_SECONDS = 10.0


def refused(tmp_path: Path, name: str, content: bytes, limits: ReadLimits | None = None
            ) -> StageError:
    path = tmp_path / name
    path.write_bytes(content)
    started = time.monotonic()
    with pytest.raises(StageError) as info:
        read_split("train", str(path), limits)
    assert time.monotonic() - started < BOUND_SECONDS
    assert "data.train_path" in info.value.message and str(path) in info.value.message
    return info.value


def test_a_multi_megabyte_row_is_refused_naming_its_line(tmp_path: Path) -> None:
    big = json.dumps({"instruction": "x" * (5 << 20), "response": "y"}).encode()
    error = refused(tmp_path, "train.jsonl", GOOD.encode() + big + b"\n")
    assert error.code == "DATA_ROW_TOO_LARGE" and "line 2" in error.message
    assert "data.max_row_bytes" in error.message


def test_a_newline_free_file_costs_one_bounded_read(tmp_path: Path) -> None:
    # 64 MiB without a newline: refused after reading max_row_bytes + 1, not all of it.
    path = tmp_path / "train.jsonl"
    with path.open("wb") as handle:
        handle.write(b'{"instruction": "')
        handle.truncate(64 << 20)  # sparse: 64 MiB of NUL bytes after the prefix
    started = time.monotonic()
    with pytest.raises(StageError) as info:
        read_split("train", str(path))
    assert time.monotonic() - started < BOUND_SECONDS
    assert info.value.code == "DATA_ROW_TOO_LARGE" and "line 1" in info.value.message


def test_a_file_of_gigabytes_is_refused_from_its_size(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    with path.open("wb") as handle:
        handle.write(GOOD.encode())
        handle.truncate(3 << 30)  # a sparse 3 GiB file: nothing is read to refuse it
    started = time.monotonic()
    with pytest.raises(StageError) as info:
        read_split("train", str(path))
    assert time.monotonic() - started < BOUND_SECONDS
    assert info.value.code == "DATA_TOO_LARGE"
    assert f"{3 << 30:,} bytes" in info.value.message
    assert "data.max_file_bytes" in info.value.message
    os.unlink(path)


@pytest.mark.parametrize(("row", "words"), [
    ('{"instruction": ' + "[" * 50_000 + "]" * 50_000 + ', "response": "2"}', "nested"),
    ('{"instruction": [1, 2], "response": "2"}', "nested"),
    ('{"instruction": "q", "response": ' + "9" * 5000 + "}", "5000 digits"),
    ('{"instruction": "q", "response": NaN}', "NaN"),
    ('{"instruction": "q", "response": 1e999}', "finite"),
])
def test_hostile_json_is_refused_naming_the_row(tmp_path: Path, row: str, words: str) -> None:
    error = refused(tmp_path, "train.jsonl", (GOOD + row + "\n").encode(),
                    ReadLimits(max_row_bytes=1 << 20))
    assert error.code == "DATA_UNPARSEABLE" and "line 2" in error.message
    assert words in error.message


def test_bytes_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, "train.jsonl", GOOD.encode() + b'{"instruction": "\xff\xfe"}\n')
    assert error.code == "DATA_UNPARSEABLE" and "UTF-8" in error.message


def test_mixed_types_in_one_column_are_refused(tmp_path: Path) -> None:
    rows = GOOD + json.dumps({"instruction": "What is 2 + 2?", "response": 4}) + "\n"
    error = refused(tmp_path, "train.jsonl", rows.encode())
    assert error.code == "DATA_MIXED_TYPES"
    assert "line 2" in error.message and "'response'" in error.message
    assert "number" in error.message and "text" in error.message


def test_a_parquet_cell_above_the_row_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    pd.DataFrame({"instruction": ["q", "x" * 2000], "response": ["a", "b"]}).to_parquet(path)
    with pytest.raises(StageError) as info:
        read_split("train", str(path), ReadLimits(max_row_bytes=1000))
    assert info.value.code == "DATA_ROW_TOO_LARGE" and "row 1" in info.value.message


@pytest.mark.parametrize("uri", ["http://example.com/train.jsonl",
                                 "https://example.com/train.jsonl",
                                 "simplecache::s3://bucket/train.jsonl",
                                 "ftp://host/train.jsonl"])
def test_uri_schemes_outside_the_allow_list_are_refused(uri: str) -> None:
    with pytest.raises(StageError) as info:
        read_split("train", uri)
    assert info.value.code == "DATA_URI_SCHEME_NOT_ALLOWED"
    assert uri in info.value.message


def test_the_shipped_corpus_still_reads() -> None:
    frame = read_split("train", "data/corpus/train.jsonl")
    assert len(frame) == 8000
