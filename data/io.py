"""Read a dataset split from JSONL or Parquet, on local disk or in an object store.

A location is either a local path (relative paths resolve against the project root, so a
preset means the same thing from any working directory) or a URI (``s3://``, ``gs://``,
``memory://``, ...) opened through fsspec. Every failure is a `StageError` that names the
config field, the file and, for JSONL, the line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

import fsspec
import pandas as pd

from common.digests import sha256_file
from common.errors import StageError
from common.settings import PROJECT_ROOT

SUPPORTED_SUFFIXES = (".jsonl", ".parquet")
_CHUNK_BYTES = 1 << 20


def is_uri(location: str) -> bool:
    return "://" in location


def resolve_location(location: str) -> str:
    """Absolute local path, or the URI unchanged."""
    if is_uri(location):
        return location
    path = Path(location).expanduser()
    return str(path if path.is_absolute() else PROJECT_ROOT / path)


def check_split_location(split: str, location: str) -> str:
    """Cheap checks before any expensive work: known extension, file exists. Returns it resolved."""
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


def read_split(split: str, location: str) -> pd.DataFrame:
    """The split as a DataFrame indexed 0..n-1 (row n = n-th record of the file)."""
    resolved = check_split_location(split, location)
    suffix = PurePosixPath(resolved).suffix.lower()
    with fsspec.open(resolved, "rb") as handle:
        if suffix == ".jsonl":
            return _read_jsonl(split, resolved, handle)
        return _read_parquet(split, resolved, handle)


def _read_jsonl(split: str, resolved: str, handle: IO[bytes]) -> pd.DataFrame:
    records = list(_jsonl_records(split, resolved, handle))
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()


def _jsonl_records(split: str, resolved: str, handle: IO[bytes]) -> Iterator[dict]:
    for line_number, raw in enumerate(handle, start=1):
        where = f"data.{split}_path: {resolved} line {line_number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StageError(
                "DATA_UNPARSEABLE", f"{where}: not UTF-8 ({exc}). Re-encode the file as UTF-8."
            ) from exc
        if not line.strip():
            continue  # blank lines (a trailing newline, say) carry no record
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StageError(
                "DATA_UNPARSEABLE",
                f"{where}: not valid JSON ({exc.msg} at column {exc.colno}). Each line of a "
                ".jsonl file must be one JSON object; fix or remove that line.",
            ) from exc
        if not isinstance(record, dict):
            raise StageError(
                "DATA_UNPARSEABLE",
                f"{where}: expected a JSON object, got {type(record).__name__}. Each line must "
                'be an object such as {"instruction": "...", "response": "..."}.',
            )
        yield record


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
