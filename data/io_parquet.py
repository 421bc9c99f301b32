"""The Parquet bounds (data/io.py's `SplitReader` reads through them): a file is judged from
its footer before any page is decompressed (column-chunk sizes against the row cap and
`max_column_chunk_bytes`), read in batches sized from the footer, and each dictionary-encoded
cell is measured before it is expanded."""

from __future__ import annotations

from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.errors import StageError
from data.io_limits import ReadLimits


def check_parquet_rows(split: str, resolved: str, frame: pd.DataFrame,
                        limits: ReadLimits) -> None:
    for column in frame.columns:
        dtype = frame[column].dtype
        if not (pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)):
            continue
        lengths = frame[column].map(lambda v: len(v.encode()) if isinstance(v, str) else 0)
        too_long = lengths[lengths > limits.max_row_bytes]
        if not too_long.empty:
            raise StageError(
                "DATA_ROW_TOO_LARGE",
                f"data.{split}_path: {resolved} row {int(too_long.index[0])}: column "
                f"{column!r} holds {int(too_long.iloc[0]):,} bytes, above "
                f"data.max_row_bytes={limits.max_row_bytes:,}. Shorten or remove the row, or "
                "raise data.max_row_bytes.",
            )


_PARQUET_VALUE_OVERHEAD_BYTES = 64  # per cell: length prefix, levels, its share of page headers
_PARQUET_SLACK_BYTES = 64 << 10


def check_parquet_sizes(split: str, resolved: str, metadata: pq.FileMetaData,
                         limits: ReadLimits) -> None:
    """Refuse from the footer, before any page is decompressed: a column chunk larger than
    its rows may hold at `max_row_bytes` each, or than `max_column_chunk_bytes`."""
    for group_index in range(metadata.num_row_groups):
        group = metadata.row_group(group_index)
        per_rows = (group.num_rows * (limits.max_row_bytes + _PARQUET_VALUE_OVERHEAD_BYTES)
                    + _PARQUET_SLACK_BYTES)
        for column_index in range(group.num_columns):
            column = group.column(column_index)
            size = int(column.total_uncompressed_size or 0)
            if size > per_rows:
                raise StageError(
                    "DATA_ROW_TOO_LARGE",
                    f"data.{split}_path: {resolved} row group {group_index}: column "
                    f"{column.path_in_schema!r} decompresses to {size:,} bytes for "
                    f"{group.num_rows:,} row(s), so a row is above data.max_row_bytes="
                    f"{limits.max_row_bytes:,} (read from the file's metadata; nothing was "
                    "decompressed). Shorten or remove the long rows, or raise "
                    "data.max_row_bytes.",
                )
            if size > limits.max_column_chunk_bytes:
                raise StageError(
                    "DATA_PARQUET_CHUNK_TOO_LARGE",
                    f"data.{split}_path: {resolved} row group {group_index}: column "
                    f"{column.path_in_schema!r} decompresses to {size:,} bytes, above the "
                    f"limit of {limits.max_column_chunk_bytes:,} per column and row group "
                    "(read from the file's metadata; nothing was decompressed). Rewrite the "
                    "file with smaller row groups (e.g. `to_parquet(..., row_group_size="
                    "100_000)`) and check it for oversized rows.",
                )


def parquet_batch_rows(group: pq.RowGroupMetaData, chunk_rows: int, chunk_bytes: int) -> int:
    """Rows per read so that a batch decompresses to about `chunk_bytes` at the row group's
    average row size (the footer's uncompressed sizes); at most `chunk_rows`."""
    group_bytes = sum(int(group.column(i).total_uncompressed_size or 0)
                      for i in range(group.num_columns))
    if group_bytes <= 0 or group.num_rows <= 0:
        return chunk_rows
    return max(1, min(chunk_rows, chunk_bytes * group.num_rows // group_bytes))


def expanded_cell_bytes(batch: pa.RecordBatch) -> dict[str, pa.Array]:
    """Per dictionary-encoded column, each row's cell size in bytes once expanded."""
    return {name: pc.fill_null(pc.take(pc.binary_length(column.dictionary), column.indices),
                               0).cast(pa.int64())
            for name, column in zip(batch.schema.names, batch.columns, strict=True)
            if isinstance(column, pa.DictionaryArray)}


def expanded(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` with dictionary columns decoded back to the file's own types and metadata."""
    columns = [column.dictionary_decode().cast(field.type)
               if isinstance(column, pa.DictionaryArray) else column
               for column, field in zip(batch.columns, schema, strict=True)]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def parquet_row_too_large(split: str, resolved: str, row: int, column: str, size: int,
                           limits: ReadLimits) -> StageError:
    return StageError(
        "DATA_ROW_TOO_LARGE",
        f"data.{split}_path: {resolved} row {row}: column {column!r} holds {size:,} bytes, "
        f"above data.max_row_bytes={limits.max_row_bytes:,}. Shorten or remove the row, or "
        "raise data.max_row_bytes.",
    )


def open_parquet(split: str, resolved: str, handle: IO[bytes]) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(handle)
    except (ValueError, OSError) as exc:
        raise unreadable_parquet(split, resolved, exc) from exc


def parquet_columns(parquet: pq.ParquetFile) -> list[str]:
    """The data columns in file order, without a pandas index saved as a column."""
    metadata = parquet.schema_arrow.pandas_metadata or {}
    index_columns = {c for c in metadata.get("index_columns", []) if isinstance(c, str)}
    return [name for name in parquet.schema_arrow.names if name not in index_columns]


def unreadable_parquet(split: str, resolved: str, exc: Exception) -> StageError:
    return StageError(
        "DATA_UNPARSEABLE",
        f"data.{split}_path: {resolved} is not a readable Parquet file "
        f"({type(exc).__name__}: {exc}). Rewrite it with pandas/pyarrow `to_parquet`.",
    )
