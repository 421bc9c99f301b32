"""Split-wide value identity for the rules a chunk cannot decide (data/validation.py): exact
duplicates over a whole split, and whether a prompt is among the train split's prompts
(leakage). A value is kept as a 128-bit digest and its row number, 24 bytes a row."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pandas as pd

from data.report import MAX_EXAMPLE_ROWS

_DIGEST_DTYPE = "S16"


class Duplicates:
    """Exact duplicate detection over a whole split, one chunk at a time.

    Keeps (digest, row) per non-null value; `result` sorts once and reports every row whose
    value occurs more than once, as GX's expect_column_values_to_be_unique does."""

    def __init__(self) -> None:
        self.digests: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.string_digests: list[np.ndarray] = []

    def add(self, values: pd.Series) -> None:
        keys = [_value_digest(v) for v in values]
        present = np.fromiter((k is not None for k in keys), dtype=bool, count=len(keys))
        digests = np.array([k or b"" for k in keys], dtype=_DIGEST_DTYPE)
        self.digests.append(digests[present])
        self.rows.append(values.index.to_numpy(dtype=np.int64)[present])
        is_text = np.fromiter((isinstance(v, str) for v in values), dtype=bool,
                              count=len(values))
        self.string_digests.append(digests[is_text])

    def result(self) -> tuple[int, list[int]]:
        """(rows holding a repeated value, the first MAX_EXAMPLE_ROWS of them)."""
        if not self.digests:
            return 0, []
        digests, rows = np.concatenate(self.digests), np.concatenate(self.rows)
        order = np.argsort(digests, kind="stable")
        digests, rows = digests[order], rows[order]
        repeated = np.zeros(len(digests), dtype=bool)
        same_as_next = digests[1:] == digests[:-1]
        repeated[1:] |= same_as_next
        repeated[:-1] |= same_as_next
        duplicate_rows = np.sort(rows[repeated])
        return int(duplicate_rows.size), [int(r) for r in duplicate_rows[:MAX_EXAMPLE_ROWS]]

    def unique_string_digests(self) -> np.ndarray:
        if not self.string_digests:
            return np.array([], dtype=_DIGEST_DTYPE)
        return np.unique(np.concatenate(self.string_digests))


def _value_digest(value: Any) -> bytes | None:
    """128-bit digest identifying a value as Python equality does (1 == 1.0); None for null.
    Distinct values collide with probability about n^2 / 2^129 (1e-27 at a million rows)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        payload = b"s" + value.encode("utf-8", "surrogatepass")
    elif isinstance(value, bool | np.bool_):
        payload = b"b" + str(bool(value)).encode()
    elif isinstance(value, int | np.integer):
        payload = b"n" + str(int(value)).encode()
    elif isinstance(value, float | np.floating):
        number = float(value)
        payload = b"n" + (str(int(number)) if number.is_integer() else repr(number)).encode()
    else:
        payload = b"r" + repr(value).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(payload, digest_size=16).digest()


def prompt_membership(prompts: pd.Series, digests: np.ndarray) -> pd.Series:
    """True where the prompt is a string whose digest is in the sorted array `digests`."""
    keys = [_value_digest(v) if isinstance(v, str) else None for v in prompts]
    is_text = np.fromiter((k is not None for k in keys), dtype=bool, count=len(keys))
    candidates = np.array([k or b"" for k in keys], dtype=_DIGEST_DTYPE)
    found = np.zeros(len(keys), dtype=bool)
    if digests.size:
        positions = np.searchsorted(digests, candidates).clip(max=digests.size - 1)
        found = digests[positions] == candidates
    return pd.Series(found & is_text, index=prompts.index)
