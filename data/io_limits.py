"""The bounds on one split file (data/io.py): `ReadLimits`, and the size check that refuses a
file from its size alone, before it is opened."""

from __future__ import annotations

from dataclasses import dataclass

import fsspec

from common.errors import StageError


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


def check_file_size(split: str, resolved: str, limits: ReadLimits) -> None:
    fs, path = fsspec.core.url_to_fs(resolved)
    size = int(fs.size(path) or 0)
    if size > limits.max_file_bytes:
        raise StageError(
            "DATA_TOO_LARGE",
            f"data.{split}_path: {resolved} is {size:,} bytes, above data.max_file_bytes="
            f"{limits.max_file_bytes:,}. Split the corpus into smaller files or raise "
            "data.max_file_bytes if this size is intended.",
        )
