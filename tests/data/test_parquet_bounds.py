"""Parquet is bounded by what its footer declares before any page is decompressed, and every
chunk by bytes as well as rows (issue #19 item 4: a 10 KiB file holding one 300 MiB zstd row
took validate_data from 182 to 1,690 MiB before DATA_ROW_TOO_LARGE)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import StageError
from common.settings import PROJECT_ROOT
from data.io import ReadLimits, SplitReader, read_split

pytestmark = pytest.mark.unit

PLANTED_MIB = 64
# Reading the planted file in a fresh interpreter: the rise in peak RSS across the read.
_MEASURE = """
import json, resource, sys
from data.io import read_split
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_split("train", sys.argv[1])
    code = None
except Exception as exc:
    code = getattr(exc, "code", type(exc).__name__)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"code": code, "rise_mib": (after - before) / 1024}))
"""


def test_a_planted_zstd_row_is_refused_from_the_footer_without_decompressing(
        tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"instruction": ["x" * (PLANTED_MIB << 20)], "response": ["a"]}),
                   path, compression="zstd")
    assert path.stat().st_size < 64 << 10  # the whole attack is a few KiB on disk
    with pytest.raises(StageError) as info:
        read_split("train", str(path))
    error = info.value
    assert error.code == "DATA_ROW_TOO_LARGE"
    assert "row group 0" in error.message and "'instruction'" in error.message
    match = re.search(r"decompresses to ([\d,]+) bytes", error.message)
    assert match is not None
    declared = int(match[1].replace(",", ""))
    assert declared >= PLANTED_MIB << 20
    assert "nothing was decompressed" in error.message
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin"})
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["code"] == "DATA_ROW_TOO_LARGE"
    # Before the footer check the read expanded the row several times over (~5x its size).
    assert measured["rise_mib"] < 100, measured


def test_one_huge_row_hidden_among_empty_rows_is_refused_by_the_chunk_limit(
        tmp_path: Path) -> None:
    # The per-row average stays under max_row_bytes; the column chunk as a whole does not.
    path = tmp_path / "train.parquet"
    rows = 20_000
    pq.write_table(pa.table({"instruction": ["x" * (8 << 20)] + [""] * (rows - 1),
                             "response": ["a"] * rows}), path, compression="zstd")
    with pytest.raises(StageError) as info:
        read_split("train", str(path), ReadLimits(max_column_chunk_bytes=4 << 20))
    assert info.value.code == "DATA_PARQUET_CHUNK_TOO_LARGE"
    assert "row group 0" in info.value.message and "row_group_size" in info.value.message


def test_a_repeated_dictionary_value_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    # One 2 KiB value, dictionary-encoded: the footer is small, each row references it.
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"instruction": ["q", "y" * 2048, "q"], "response": ["a"] * 3}),
                   path, use_dictionary=True)
    with pytest.raises(StageError) as info:
        read_split("train", str(path), ReadLimits(max_row_bytes=1024))
    assert info.value.code == "DATA_ROW_TOO_LARGE" and "row 1" in info.value.message


def test_each_chunk_is_bounded_by_bytes_as_well_as_rows(tmp_path: Path) -> None:
    # 400 rows of one 1 KiB value repeated: ~400 KiB expanded from a file of a few KiB.
    path = tmp_path / "train.parquet"
    pd.DataFrame({"instruction": ["z" * 1024] * 400, "response": ["a"] * 400}).to_parquet(path)
    chunks = list(SplitReader("train", str(path), chunk_rows=10_000, chunk_bytes=64 << 10))
    assert sum(len(c) for c in chunks) == 400
    assert len(chunks) > 1
    for chunk in chunks:
        assert int(chunk["instruction"].str.len().sum()) <= 64 << 10
    assert list(pd.concat(chunks).index) == list(range(400))


def test_normal_parquet_reads_as_before(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    frame = pd.DataFrame({"instruction": ["q1", "q2", None], "response": ["a", "b", "c"],
                          "score": [1.0, 2.0, 3.0]})
    frame.to_parquet(path)
    read = read_split("train", str(path))
    pd.testing.assert_frame_equal(read, frame)
