"""A judge that answers garbage gets invalid outputs, never a crash or a hang.

Property-based (hypothesis) over the parsers, plus real HTTP against the scripted server for
the cases that used to hang (`Retry-After: nan`) or crash (a body that is valid JSON of the
wrong shape)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.judge.client import CallPolicy, JudgeClient, JudgeEndpoint, JudgeRequest
from eval.judge.parsing import (
    RUBRIC_SCORES,
    expected_rubric_score,
    option_probabilities,
    parse_pairwise,
    parse_score,
)
from testing.scripted_server import Reply, ScriptedServer

pytestmark = pytest.mark.unit

POLICY = CallPolicy(timeout_seconds=5.0, backoff_seconds=0.01, max_retries=2,
                    max_backoff_seconds=0.5)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=30)
# Bodies shaped like a chat completion, with any value in any field.
completion_like = st.fixed_dictionaries({
    "choices": st.one_of(json_values, st.lists(st.fixed_dictionaries({
        "message": st.one_of(json_values, st.fixed_dictionaries({"content": json_values})),
        "logprobs": st.one_of(json_values, st.fixed_dictionaries({"content": st.lists(
            st.one_of(json_values, st.fixed_dictionaries({
                "token": json_values, "logprob": json_values,
                "top_logprobs": st.one_of(json_values, st.lists(st.fixed_dictionaries({
                    "token": json_values, "logprob": json_values}), max_size=4))})),
            max_size=3)})),
    }), max_size=2)),
    "usage": st.one_of(json_values, st.fixed_dictionaries({
        "prompt_tokens": json_values, "completion_tokens": json_values})),
})


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, completion_like))
def test_any_json_body_is_a_reply_or_a_value_error(body: Any) -> None:
    judge = JudgeClient(JudgeEndpoint("http://127.0.0.1:9", "m"), POLICY)
    try:
        reply = judge._parse(body)
    except ValueError:
        return
    assert isinstance(reply.text, str)
    assert 0 <= reply.prompt_tokens <= 10**9 and 0 <= reply.completion_tokens <= 10**9
    for token, logprob in reply.top_logprobs or []:
        assert isinstance(token, str) and math.isfinite(logprob) and logprob <= 0


@given(st.text())
def test_verdict_parsers_accept_exactly_the_allowed_tokens(text: str) -> None:
    assert parse_pairwise(text) in (None, "A", "B", "TIE")
    score = parse_score(text)
    assert score is None or str(score) == text.strip()


@given(st.lists(st.tuples(st.text(max_size=4), st.floats()), max_size=8))
def test_verdict_probabilities_are_a_distribution_or_none(top: list[tuple[str, float]]) -> None:
    probs = option_probabilities(top, RUBRIC_SCORES)
    if probs is not None:
        assert math.isclose(sum(probs.values()), 1.0, rel_tol=1e-9)
        assert all(0.0 <= p <= 1.0 for p in probs.values())
    score = expected_rubric_score(top)
    assert score is None or 1.0 <= score <= 5.0


@given(st.one_of(st.none(), st.text(max_size=30),
                 st.floats().map(repr), st.integers(min_value=-10**6, max_value=10**400).map(str)))
def test_backoff_is_always_finite_and_bounded(retry_after: str | None) -> None:
    judge = JudgeClient(JudgeEndpoint("http://127.0.0.1:9", "m"), POLICY)
    for attempt in range(6):
        delay = judge._backoff(attempt, retry_after)
        assert math.isfinite(delay) and 0.0 <= delay <= POLICY.max_backoff_seconds


@pytest.mark.integration
@pytest.mark.parametrize("retry_after", ["nan", "inf", "-5", "1e999", "Wed, 21 Oct 2015"])
def test_hostile_retry_after_does_not_hang(retry_after: str) -> None:
    def script(path: str, request: dict[str, Any], call: int) -> Reply:
        return Reply(429, {"error": "slow down"}, headers={"Retry-After": retry_after})

    with ScriptedServer(script) as server:
        judge = JudgeClient(JudgeEndpoint(server.base_url, "m"), POLICY)
        started = time.monotonic()
        (reply,) = judge.complete_all([JudgeRequest("hi", "k")])
    assert reply.text is None and reply.error is not None and "429" in reply.error
    # bounded by (retries) x max_backoff, not forever; generous for a loaded machine
    assert time.monotonic() - started < 60


@pytest.mark.integration
@pytest.mark.parametrize("body", [
    [1, 2, 3], "just text", {"choices": "nope"}, {"choices": [{"message": {"content": 5}}]},
    {"choices": [{"message": {"content": "A"}}], "usage": {"prompt_tokens": 1e300}},
    {"choices": [{"message": {"content": "A"}}], "usage": "lots"},
    {"choices": [{"message": {"content": "A"}, "logprobs": {"content": [
        {"token": "A", "logprob": 1e308, "top_logprobs": [{"token": "A", "logprob": "x"}]}]}}]},
    "[" * 100_000,
])
def test_garbage_bodies_become_invalid_outputs(body: Any) -> None:
    raw = body if isinstance(body, str) and body.startswith("[") else json.dumps(body)

    def script(path: str, request: dict[str, Any], call: int) -> Reply:
        return Reply(200, raw)

    with ScriptedServer(script) as server:
        judge = JudgeClient(JudgeEndpoint(server.base_url, "m"), POLICY)
        (reply,) = judge.complete_all([JudgeRequest("hi", "k")])
    if reply.text is not None:  # a well-formed reply with out-of-range numbers dropped
        assert reply.text == "A" and all(lp <= 0 for _, lp in reply.top_logprobs or [])
    else:
        assert reply.error is not None


@pytest.mark.integration
@pytest.mark.parametrize(("padding_bytes", "accepted"), [(900_000, True), (3 << 20, False)])
def test_judge_replies_are_read_up_to_a_bound(padding_bytes: int, accepted: bool) -> None:
    # a verdict padded with junk: under the 1 MiB bound it is parsed, over it the body is
    # refused after reading at most the bound (it was read whole: 400 MiB took 1.2 GB)
    body = {"choices": [{"message": {"content": "A"}}], "padding": "x" * padding_bytes}

    def script(path: str, request: dict[str, Any], call: int) -> Reply:
        return Reply(200, json.dumps(body))

    with ScriptedServer(script) as server:
        judge = JudgeClient(JudgeEndpoint(server.base_url, "m"), POLICY)
        (reply,) = judge.complete_all([JudgeRequest("hi", "k")])
    if accepted:
        assert reply.text == "A" and reply.error is None
    else:
        assert reply.text is None and reply.error is not None
        assert "JudgeBodyTooLarge" in reply.error
