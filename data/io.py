"""Read a dataset split from JSONL or Parquet, on local disk or in an object store.

A location is either a local path (relative paths resolve against the project root, so a
preset means the same thing from any working directory) or a URI (``s3://``, ``gs://``,
``memory://``, ...) opened through fsspec. Every failure is a `StageError` that names the
config field, the file and, for JSONL, the line.

Hostile input is refused in bounded time and memory, before any tokenizer sees it: a file
larger than `ReadLimits.max_file_bytes` is refused from its size alone; a JSONL line is read
at most `max_row_bytes + 1` bytes at a time, so one multi-megabyte (or newline-free
multi-gigabyte) row costs one bounded read; integers longer than 100 digits, non-finite
numbers, nested values and deeply nested JSON are refused by the parser's hooks; a column
whose values change type (text in one row, a number in another) is refused at the first row
that breaks it. URIs must use a scheme from `ALLOWED_URI_SCHEMES`.

A split is read in chunks (`SplitReader`): consecutive DataFrames of bounded rows and bytes,
indexed by row number in the file, so a split larger than memory costs one chunk of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO, Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data.io_jsonl import jsonl_records
from data.io_limits import ReadLimits, check_file_size
from data.io_location import (
    ALLOWED_URI_SCHEMES,
    SUPPORTED_SUFFIXES,
    check_split_location,
    check_uri_scheme,
    is_uri,
    resolve_location,
    sha256_location,
)
from data.io_parquet import (
    check_parquet_rows,
    check_parquet_sizes,
    expanded,
    expanded_cell_bytes,
    open_parquet,
    parquet_batch_rows,
    parquet_columns,
    parquet_row_too_large,
    unreadable_parquet,
)

# The public API, wherever each part now lives: locations in io_location.py, the bounds in
# io_limits.py, JSONL parsing in io_jsonl.py, the Parquet bounds in io_parquet.py; this module
# reads a split in chunks.
__all__ = [
    "ALLOWED_URI_SCHEMES", "DEFAULT_CHUNK_BYTES", "DEFAULT_CHUNK_ROWS", "SUPPORTED_SUFFIXES",
    "ReadLimits", "SplitReader", "check_split_location", "check_uri_scheme", "is_uri",
    "read_split", "resolve_location", "sha256_location",
]

DEFAULT_CHUNK_ROWS = 50_000
DEFAULT_CHUNK_BYTES = 64 << 20


class SplitReader:
    """A split read as consecutive DataFrames of at most `chunk_rows` rows (and, for JSONL,
    about `chunk_bytes` bytes of input), indexed by row number in the file: chunk k holds rows
    ``offset .. offset+len-1``. Each iteration reads the file again from the start.

    Every hostile-input bound of `read_split` holds per row, so memory stays bounded by one
    chunk whatever the file's size. After an iteration `columns` lists every column seen, in
    order of first appearance, and `rows` the rows read."""

    def __init__(self, split: str, location: str, limits: ReadLimits | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.split, self.location = split, location
        self.limits = limits or ReadLimits()
        self.chunk_rows, self.chunk_bytes = chunk_rows, chunk_bytes
        self.columns: list[str] = []
        self.rows = 0

    def __iter__(self) -> Iterator[pd.DataFrame]:
        resolved = check_split_location(self.split, self.location)
        check_file_size(self.split, resolved, self.limits)
        self.columns, self.rows = [], 0
        with fsspec.open(resolved, "rb") as handle:
            if PurePosixPath(resolved).suffix.lower() == ".jsonl":
                yield from self._jsonl_chunks(resolved, handle)
            else:
                yield from self._parquet_chunks(resolved, handle)

    def _jsonl_chunks(self, resolved: str, handle: IO[bytes]) -> Iterator[pd.DataFrame]:
        seen: dict[str, None] = {}  # an ordered set of column names
        records: list[dict[str, Any]] = []
        chunk_bytes = 0
        for record, size in jsonl_records(self.split, resolved, handle, self.limits):
            records.append(record)
            seen.update(dict.fromkeys(record))
            chunk_bytes += size
            if len(records) >= self.chunk_rows or chunk_bytes >= self.chunk_bytes:
                yield self._frame(pd.DataFrame.from_records(records), list(seen))
                records, chunk_bytes = [], 0
        if records:
            yield self._frame(pd.DataFrame.from_records(records), list(seen))
        self.columns = list(seen)

    def _parquet_chunks(self, resolved: str, handle: IO[bytes]) -> Iterator[pd.DataFrame]:
        parquet = open_parquet(self.split, resolved, handle)
        check_parquet_sizes(self.split, resolved, parquet.metadata, self.limits)
        schema = parquet.schema_arrow
        # Text columns are read as dictionaries (values once, an index per row), so a row's
        # size is known before it is expanded: one short value repeated by a million indices
        # costs its dictionary, not a million copies.
        text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(
            f.type) or pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
        try:
            parquet = pq.ParquetFile(handle, metadata=parquet.metadata, read_dictionary=text)
            for group in range(parquet.metadata.num_row_groups):
                batch_rows = parquet_batch_rows(parquet.metadata.row_group(group),
                                                 self.chunk_rows, self.chunk_bytes)
                for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[group]):
                    for part in self._byte_bounded(resolved, batch, schema):
                        # Through a Table so pandas metadata applies; a saved index is
                        # dropped, since reports count rows by position.
                        frame = pa.Table.from_batches([part]).to_pandas().reset_index(drop=True)
                        if len(frame):
                            frame.index = pd.RangeIndex(self.rows, self.rows + len(frame))
                            check_parquet_rows(self.split, resolved, frame, self.limits)
                            yield self._frame(frame, list(frame.columns))
        except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise unreadable_parquet(self.split, resolved, exc) from exc
        self.columns = parquet_columns(parquet)

    def _byte_bounded(self, resolved: str, batch: pa.RecordBatch, schema: pa.Schema
                      ) -> Iterator[pa.RecordBatch]:
        """`batch` with its dictionary columns expanded, in slices of at most `chunk_bytes`
        of expanded text; a cell above `max_row_bytes` is refused before it is expanded."""
        sizes = expanded_cell_bytes(batch)
        if not sizes:
            yield batch
            return
        for name, cell_bytes in sizes.items():
            too_long = pc.indices_nonzero(pc.greater(cell_bytes, self.limits.max_row_bytes))
            if len(too_long):
                row = int(too_long[0].as_py())
                raise parquet_row_too_large(self.split, resolved, self.rows + row, name,
                                             int(cell_bytes[row].as_py()), self.limits)
        first, *others = sizes.values()
        row_bytes = first
        for cell_bytes in others:
            row_bytes = pc.add(row_bytes, cell_bytes)
        if pc.sum(row_bytes).as_py() <= self.chunk_bytes:
            yield expanded(batch, schema)
            return
        start, total = 0, 0
        for index, size in enumerate(row_bytes.to_pylist()):
            if total and total + size > self.chunk_bytes:
                yield expanded(batch.slice(start, index - start), schema)
                start, total = index, 0
            total += size
        yield expanded(batch.slice(start), schema)

    def _frame(self, frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        frame.index = pd.RangeIndex(self.rows, self.rows + len(frame))
        self.rows += len(frame)
        self.columns = columns
        return frame


def read_split(split: str, location: str, limits: ReadLimits | None = None) -> pd.DataFrame:
    """The whole split as one DataFrame indexed 0..n-1 (row n = n-th record of the file); for
    small files: the stage itself streams through `SplitReader`."""
    reader = SplitReader(split, location, limits)
    chunks = list(reader)
    if not chunks:
        return pd.DataFrame(columns=reader.columns)
    return pd.concat(chunks)[reader.columns] if len(chunks) > 1 else chunks[0]
