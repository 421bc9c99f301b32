"""`data.tokenizer_train_max_rows`: the BPE is trained on the first N rows of train only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.errors import StageError
from data.config import DataConfig
from data.io import SplitReader
from data.stage import build_tokenizer
from tests.data.conftest import write_jsonl

HEAD_ROWS = 150
# Small chunks, so the cap falls inside a chunk and later chunks exist.
CHUNK_ROWS = 64


def _tokenizer_json(records: list[dict[str, Any]], path: Path, cap: int) -> str:
    write_jsonl(path, records)
    config = DataConfig(train_path=str(path), tokenizer_train_max_rows=cap,
                        chunk_rows=CHUNK_ROWS)
    tokenizer = build_tokenizer(config, SplitReader("train", str(path), chunk_rows=CHUNK_ROWS))
    return str(tokenizer.backend_tokenizer.to_str())


@pytest.mark.integration
def test_rows_beyond_the_cap_do_not_change_the_tokenizer(
    corpus_records: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    head = corpus_records["train"][:HEAD_ROWS]
    longer = corpus_records["train"][:3 * HEAD_ROWS]
    alone = _tokenizer_json(head, tmp_path / "head.jsonl", cap=HEAD_ROWS)
    capped = _tokenizer_json(longer, tmp_path / "longer.jsonl", cap=HEAD_ROWS)
    assert capped == alone
    # Control: without the cap the extra rows do change it, so the equality above means
    # something.
    uncapped = _tokenizer_json(longer, tmp_path / "longer.jsonl", cap=len(longer))
    assert uncapped != alone


@pytest.mark.unit
def test_a_cap_below_one_row_is_refused() -> None:
    with pytest.raises(StageError, match="tokenizer_train_max_rows=0") as raised:
        DataConfig(tokenizer_train_max_rows=0)
    assert raised.value.code == "CONFIG_INVALID"
