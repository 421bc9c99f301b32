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

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.digests import sha256_file, sha256_stream
from common.errors import StageError
from common.settings import PROJECT_ROOT

SUPPORTED_SUFFIXES = (".jsonl", ".parquet")
# Object stores and local files only: no http(s) (an unauthenticated, mutable source), no
# fsspec chaining or caching schemes that can reach elsewhere.
ALLOWED_URI_SCHEMES = ("file", "s3", "gs", "gcs", "az", "abfs", "abfss", "memory")
_MAX_INT_DIGITS = 100


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on one split file; exceeding one is DATA_TOO_LARGE with the fix named."""

    max_file_bytes: int = 1 << 30  # 1 GiB
    max_row_bytes: int = 64 << 10  # 64 KiB: far above any row a 128–2048-token model trains on
    # Columns that may hold nested JSON (a chat row's list of messages); their shape is judged
    # by the data rules, so a malformed one is reported by row instead of stopping the read.
    # Every other column must stay flat. Depth is still bounded by the parser.
    nested_fields: tuple[str, ...] = ()
    # Parquet: the most one column of one row group may decompress to, read from the footer
    # before any page is. Beside the per-row average (`max_row_bytes` per row), this bounds a
    # single huge value hidden among many empty rows; default writers stay far below it (a
    # 64 MiB chunk is a million 64-byte cells).
    max_column_chunk_bytes: int = 256 << 20


def is_uri(location: str) -> bool:
    return "://" in location


def check_uri_scheme(split: str, location: str) -> None:
    scheme = location.split("://", 1)[0].lower() if is_uri(location) else "file"
    if scheme not in ALLOWED_URI_SCHEMES or "::" in location:
        raise StageError(
            "DATA_URI_SCHEME_NOT_ALLOWED",
            f"data.{split}_path={location!r}: scheme {scheme!r} (or a chained fsspec URL) is "
            f"not allowed. Use a local path or one of {list(ALLOWED_URI_SCHEMES)}; copy data "
            "from elsewhere into an object store first.",
        )


def resolve_location(location: str) -> str:
    """Absolute local path, or the URI unchanged."""
    if is_uri(location):
        return location
    path = Path(location).expanduser()
    return str(path if path.is_absolute() else PROJECT_ROOT / path)


def check_split_location(split: str, location: str) -> str:
    """Cheap checks before any expensive work: known extension, file exists. Returns it resolved."""
    check_uri_scheme(split, location)
    resolved = resolve_location(location)
    suffix = PurePosixPath(resolved).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise StageError(
            "DATA_UNSUPPORTED_FORMAT",
            f"data.{split}_path={location!r}: unknown file extension {suffix or '(none)'!r}. "
            f"Supported: {list(SUPPORTED_SUFFIXES)}; convert the file or rename it.",
        )
    if not _exists(split, location, resolved):
        raise StageError(
            "DATA_FILE_NOT_FOUND",
            f"data.{split}_path={location!r}: no file at {resolved}. Point data.{split}_path "
            "at an existing file (relative paths resolve against the project root) or run "
            "`python -m data.generate` to recreate the shipped corpus.",
        )
    return resolved


def _exists(split: str, location: str, resolved: str) -> bool:
    if not is_uri(resolved):
        return Path(resolved).is_file()
    try:
        fs, path = fsspec.core.url_to_fs(resolved)
        return bool(fs.isfile(path))
    except Exception as exc:  # credentials, unknown protocol, network: all "cannot reach"
        raise StageError(
            "DATA_FILE_UNREACHABLE",
            f"data.{split}_path={location!r}: cannot open {resolved} through fsspec "
            f"({type(exc).__name__}: {exc}). Check the URI, the protocol's fsspec package and "
            "the object-store credentials.",
        ) from exc


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
        _check_file_size(self.split, resolved, self.limits)
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
        for record, size in _jsonl_records(self.split, resolved, handle, self.limits):
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
        parquet = _open_parquet(self.split, resolved, handle)
        _check_parquet_sizes(self.split, resolved, parquet.metadata, self.limits)
        schema = parquet.schema_arrow
        # Text columns are read as dictionaries (values once, an index per row), so a row's
        # size is known before it is expanded: one short value repeated by a million indices
        # costs its dictionary, not a million copies.
        text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(
            f.type) or pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
        try:
            parquet = pq.ParquetFile(handle, metadata=parquet.metadata, read_dictionary=text)
            for group in range(parquet.metadata.num_row_groups):
                batch_rows = _parquet_batch_rows(parquet.metadata.row_group(group),
                                                 self.chunk_rows, self.chunk_bytes)
                for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[group]):
                    for part in self._byte_bounded(resolved, batch, schema):
                        # Through a Table so pandas metadata applies; a saved index is
                        # dropped, since reports count rows by position.
                        frame = pa.Table.from_batches([part]).to_pandas().reset_index(drop=True)
                        if len(frame):
                            frame.index = pd.RangeIndex(self.rows, self.rows + len(frame))
                            _check_parquet_rows(self.split, resolved, frame, self.limits)
                            yield self._frame(frame, list(frame.columns))
        except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise _unreadable_parquet(self.split, resolved, exc) from exc
        self.columns = _parquet_columns(parquet)

    def _byte_bounded(self, resolved: str, batch: pa.RecordBatch, schema: pa.Schema
                      ) -> Iterator[pa.RecordBatch]:
        """`batch` with its dictionary columns expanded, in slices of at most `chunk_bytes`
        of expanded text; a cell above `max_row_bytes` is refused before it is expanded."""
        sizes = _expanded_cell_bytes(batch)
        if not sizes:
            yield batch
            return
        for name, cell_bytes in sizes.items():
            too_long = pc.indices_nonzero(pc.greater(cell_bytes, self.limits.max_row_bytes))
            if len(too_long):
                row = int(too_long[0].as_py())
                raise _parquet_row_too_large(self.split, resolved, self.rows + row, name,
                                             int(cell_bytes[row].as_py()), self.limits)
        first, *others = sizes.values()
        row_bytes = first
        for cell_bytes in others:
            row_bytes = pc.add(row_bytes, cell_bytes)
        if pc.sum(row_bytes).as_py() <= self.chunk_bytes:
            yield _expanded(batch, schema)
            return
        start, total = 0, 0
        for index, size in enumerate(row_bytes.to_pylist()):
            if total and total + size > self.chunk_bytes:
                yield _expanded(batch.slice(start, index - start), schema)
                start, total = index, 0
            total += size
        yield _expanded(batch.slice(start), schema)

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


def _check_file_size(split: str, resolved: str, limits: ReadLimits) -> None:
    fs, path = fsspec.core.url_to_fs(resolved)
    size = int(fs.size(path) or 0)
    if size > limits.max_file_bytes:
        raise StageError(
            "DATA_TOO_LARGE",
            f"data.{split}_path: {resolved} is {size:,} bytes, above data.max_file_bytes="
            f"{limits.max_file_bytes:,}. Split the corpus into smaller files or raise "
            "data.max_file_bytes if this size is intended.",
        )


def _jsonl_records(split: str, resolved: str, handle: IO[bytes],
                   limits: ReadLimits) -> Iterator[tuple[dict, int]]:
    """(record, size of its line in bytes) for each non-blank line."""
    column_types: dict[str, str] = {}
    line_number = 0
    while raw := handle.readline(limits.max_row_bytes + 1):
        line_number += 1
        where = f"data.{split}_path: {resolved} line {line_number}"
        if len(raw) > limits.max_row_bytes:
            raise StageError(
                "DATA_ROW_TOO_LARGE",
                f"{where}: the row is longer than data.max_row_bytes={limits.max_row_bytes:,} "
                "bytes. Remove or shorten it (a training example that long exceeds every "
                "token budget), or raise data.max_row_bytes.",
            )
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StageError(
                "DATA_UNPARSEABLE", f"{where}: not UTF-8 ({exc}). Re-encode the file as UTF-8."
            ) from exc
        if not line.strip():
            continue  # blank lines (a trailing newline, say) carry no record
        record = _parse_record(where, line, limits.nested_fields)
        _check_column_types(where, record, column_types, limits.nested_fields)
        yield record, len(raw)


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (at most {_MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or len(text) > 2 * _MAX_INT_DIGITS:
        raise ValueError(f"the number {text[:40]!r} is not a finite number of sane length")
    return value


def _parse_constant(text: str) -> float:
    raise ValueError(f"{text} is not valid JSON")


def _parse_record(where: str, line: str, nested_fields: tuple[str, ...] = ()
                  ) -> dict[str, Any]:
    try:
        record = json.loads(line, parse_int=_parse_int, parse_float=_parse_float,
                            parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise StageError(
            "DATA_UNPARSEABLE",
            f"{where}: not valid JSON ({exc.msg} at column {exc.colno}). Each line of a "
            ".jsonl file must be one JSON object; fix or remove that line.",
        ) from exc
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise StageError(
            "DATA_UNPARSEABLE",
            f"{where}: refused ({reason}). Rows hold flat text fields; fix or remove the row.",
        ) from exc
    if not isinstance(record, dict):
        raise StageError(
            "DATA_UNPARSEABLE",
            f"{where}: expected a JSON object, got {type(record).__name__}. Each line must "
            'be an object such as {"instruction": "...", "response": "..."}.',
        )
    nested = sorted(k for k, v in record.items()
                    if isinstance(v, dict | list) and k not in nested_fields)
    if nested:
        raise StageError(
            "DATA_UNPARSEABLE",
            f"{where}: field(s) {nested} hold nested objects or lists. Rows hold flat fields "
            "(text, numbers, booleans, null); flatten or drop those fields.",
        )
    return record


def _type_name(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, int | float) else "text"


def _check_column_types(where: str, record: dict[str, Any], column_types: dict[str, str],
                        nested_fields: tuple[str, ...] = ()) -> None:
    """One type per column (null aside), fixed by the first row that has a value; nested
    fields are left to the data rules."""
    for key, value in record.items():
        kind = _type_name(value)
        if kind is None or key in nested_fields:
            continue
        seen = column_types.setdefault(key, kind)
        if seen != kind:
            raise StageError(
                "DATA_MIXED_TYPES",
                f"{where}: column {key!r} holds {kind} here but {seen} in earlier rows. Each "
                "column must hold one type; convert the values (e.g. quote numbers as text).",
            )


def _check_parquet_rows(split: str, resolved: str, frame: pd.DataFrame,
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


def _check_parquet_sizes(split: str, resolved: str, metadata: pq.FileMetaData,
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


def _parquet_batch_rows(group: pq.RowGroupMetaData, chunk_rows: int, chunk_bytes: int) -> int:
    """Rows per read so that a batch decompresses to about `chunk_bytes` at the row group's
    average row size (the footer's uncompressed sizes); at most `chunk_rows`."""
    group_bytes = sum(int(group.column(i).total_uncompressed_size or 0)
                      for i in range(group.num_columns))
    if group_bytes <= 0 or group.num_rows <= 0:
        return chunk_rows
    return max(1, min(chunk_rows, chunk_bytes * group.num_rows // group_bytes))


def _expanded_cell_bytes(batch: pa.RecordBatch) -> dict[str, pa.Array]:
    """Per dictionary-encoded column, each row's cell size in bytes once expanded."""
    return {name: pc.fill_null(pc.take(pc.binary_length(column.dictionary), column.indices),
                               0).cast(pa.int64())
            for name, column in zip(batch.schema.names, batch.columns, strict=True)
            if isinstance(column, pa.DictionaryArray)}


def _expanded(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` with dictionary columns decoded back to the file's own types and metadata."""
    columns = [column.dictionary_decode().cast(field.type)
               if isinstance(column, pa.DictionaryArray) else column
               for column, field in zip(batch.columns, schema, strict=True)]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _parquet_row_too_large(split: str, resolved: str, row: int, column: str, size: int,
                           limits: ReadLimits) -> StageError:
    return StageError(
        "DATA_ROW_TOO_LARGE",
        f"data.{split}_path: {resolved} row {row}: column {column!r} holds {size:,} bytes, "
        f"above data.max_row_bytes={limits.max_row_bytes:,}. Shorten or remove the row, or "
        "raise data.max_row_bytes.",
    )


def _open_parquet(split: str, resolved: str, handle: IO[bytes]) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(handle)
    except (ValueError, OSError) as exc:
        raise _unreadable_parquet(split, resolved, exc) from exc


def _parquet_columns(parquet: pq.ParquetFile) -> list[str]:
    """The data columns in file order, without a pandas index saved as a column."""
    metadata = parquet.schema_arrow.pandas_metadata or {}
    index_columns = {c for c in metadata.get("index_columns", []) if isinstance(c, str)}
    return [name for name in parquet.schema_arrow.names if name not in index_columns]


def _unreadable_parquet(split: str, resolved: str, exc: Exception) -> StageError:
    return StageError(
        "DATA_UNPARSEABLE",
        f"data.{split}_path: {resolved} is not a readable Parquet file "
        f"({type(exc).__name__}: {exc}). Rewrite it with pandas/pyarrow `to_parquet`.",
    )


def sha256_location(location: str) -> str:
    """sha256 of the file's bytes; object-store files are streamed, never fully loaded."""
    resolved = resolve_location(location)
    if not is_uri(resolved):
        return sha256_file(Path(resolved))
    with fsspec.open(resolved, "rb") as handle:
        return sha256_stream(handle)
