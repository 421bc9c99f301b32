"""The load generator's token count, which serving's $ per 1M generated tokens is made of."""

from __future__ import annotations

import json

import pytest

from deploy.loadgen import LoadResult, completion_tokens

pytestmark = pytest.mark.unit


def _sse(*events: object) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def _delta(text: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


def test_the_usage_chunk_is_the_count_when_the_server_sends_one() -> None:
    stream = _sse(_delta("a"), _delta("b"), {"choices": [], "usage": {"completion_tokens": 7}})
    assert completion_tokens(stream) == (7, "usage")


def test_without_usage_each_non_empty_delta_is_one_token() -> None:
    stream = _sse({"choices": [{"delta": {"role": "assistant"}}]}, _delta("a"), _delta(""),
                  _delta("b"), {"choices": [{"delta": {}, "finish_reason": "length"}]})
    assert completion_tokens(stream) == (2, "deltas")


@pytest.mark.parametrize("garbage", [
    b"data: {not json\n\n", b"data: [1, 2]\n\n", b": keep-alive\n\n",
    _sse({"usage": {"completion_tokens": -3}}), _sse({"usage": {"completion_tokens": True}}),
    _sse({"usage": {"completion_tokens": "12"}}), b"",
])
def test_garbage_counts_nothing_and_never_raises(garbage: bytes) -> None:
    assert completion_tokens(garbage) == (0, "deltas")


def test_throughput_is_tokens_over_the_wall_time_of_the_load() -> None:
    result = LoadResult(ok=4, generated_tokens=300, first_sent=10.0, last_answered=12.5)
    summary = result.to_dict()
    assert summary["wall_seconds"] == 2.5
    assert summary["generated_tokens_per_second"] == pytest.approx(120.0)
    assert "generated_tokens_per_second" not in LoadResult().to_dict()  # nothing measured
