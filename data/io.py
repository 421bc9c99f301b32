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
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import fsspec
import pandas as pd

from common.digests import sha256_file
from common.errors import StageError
from common.settings import PROJECT_ROOT

SUPPORTED_SUFFIXES = (".jsonl", ".parquet")
# Object stores and local files only: no http(s) (an unauthenticated, mutable source), no
# fsspec chaining or caching schemes that can reach elsewhere.
ALLOWED_URI_SCHEMES = ("file", "s3", "gs", "gcs", "az", "abfs", "abfss", "memory")
_CHUNK_BYTES = 1 << 20
_MAX_INT_DIGITS = 100


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on one split file; exceeding one is DATA_TOO_LARGE with the fix named."""

    max_file_bytes: int = 1 << 30  # 1 GiB
    max_row_bytes: int = 64 << 10  # 64 KiB: far above any row a 128–2048-token model trains on


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


def read_split(split: str, location: str, limits: ReadLimits | None = None) -> pd.DataFrame:
    """The split as a DataFrame indexed 0..n-1 (row n = n-th record of the file)."""
    limits = limits or ReadLimits()
    resolved = check_split_location(split, location)
    _check_file_size(split, resolved, limits)
    suffix = PurePosixPath(resolved).suffix.lower()
    with fsspec.open(resolved, "rb") as handle:
        if suffix == ".jsonl":
            return _read_jsonl(split, resolved, handle, limits)
        frame = _read_parquet(split, resolved, handle)
    _check_parquet_rows(split, resolved, frame, limits)
    return frame


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


def _read_jsonl(split: str, resolved: str, handle: IO[bytes],
                limits: ReadLimits) -> pd.DataFrame:
    records = list(_jsonl_records(split, resolved, handle, limits))
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()


def _jsonl_records(split: str, resolved: str, handle: IO[bytes],
                   limits: ReadLimits) -> Iterator[dict]:
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
        record = _parse_record(where, line)
        _check_column_types(where, record, column_types)
        yield record


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


def _parse_record(where: str, line: str) -> dict[str, Any]:
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
    nested = sorted(k for k, v in record.items() if isinstance(v, dict | list))
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


def _check_column_types(where: str, record: dict[str, Any],
                        column_types: dict[str, str]) -> None:
    """One type per column (null aside), fixed by the first row that has a value."""
    for key, value in record.items():
        kind = _type_name(value)
        if kind is None:
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


def _read_parquet(split: str, resolved: str, handle: IO[bytes]) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(handle)
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise StageError(
            "DATA_UNPARSEABLE",
            f"data.{split}_path: {resolved} is not a readable Parquet file "
            f"({type(exc).__name__}: {exc}). Rewrite it with pandas/pyarrow `to_parquet`.",
        ) from exc
    # A frame saved with its index keeps it; reports count rows by position, so drop it.
    return frame.reset_index(drop=True)


def sha256_location(location: str) -> str:
    """sha256 of the file's bytes; object-store files are streamed, never fully loaded."""
    resolved = resolve_location(location)
    if not is_uri(resolved):
        return sha256_file(Path(resolved))
    digest = hashlib.sha256()
    with fsspec.open(resolved, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
