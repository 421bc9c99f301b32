"""Data error codes no other test raised: an object-store URI that cannot be reached."""

from __future__ import annotations

import pytest

from common.errors import StageError
from data.io import check_split_location, read_split
from tasks.resolve import resolve

pytestmark = pytest.mark.unit

# A protocol no fsspec implementation knows: fails at once, offline, with no credentials.
# An allowed object-store scheme that cannot be opened: Azure without an account configured
# (adlfs refuses before any network call).
UNREACHABLE = "abfs://bucket/shipyard/train.jsonl"


def test_unreachable_uri_is_reported_before_any_work() -> None:
    # resolve_config is the first task: a bad location fails there, in seconds.
    with pytest.raises(StageError) as info:
        resolve("tiny", [f"data.train_path={UNREACHABLE}"])
    assert info.value.code == "DATA_FILE_UNREACHABLE"
    assert "data.train_path" in info.value.message
    assert "abfs://bucket" in info.value.message


def test_unreachable_uri_through_the_reader() -> None:
    with pytest.raises(StageError) as info:
        read_split("validation", UNREACHABLE.replace("train", "validation"))
    assert info.value.code == "DATA_FILE_UNREACHABLE"
    with pytest.raises(StageError) as direct:
        check_split_location("eval", UNREACHABLE)
    assert direct.value.code == "DATA_FILE_UNREACHABLE"
