"""JSONL rows read in bounded time and memory (data/io.py): a line is read at most
`max_row_bytes + 1` bytes at a time; long integers, non-finite numbers, nested values and
deeply nested JSON are refused by the parser's hooks; a column keeps one type."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import IO, Any

from common.errors import StageError
from data.io_limits import ReadLimits

_MAX_INT_DIGITS = 100


def jsonl_records(split: str, resolved: str, handle: IO[bytes],
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
