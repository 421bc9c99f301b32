"""The judge-call cache: scoped to one judge server and the weights it serves; an entry that
is not a reply (torn, hand-edited, planted) is a miss that is called again, never an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.judge.cache import JudgeCache
from eval.judge.client import CallPolicy, JudgeClient, JudgeEndpoint
from eval.judge.pairwise import judge_pairs
from eval.judge.prompts import load_prompt
from testing.scripted_server import ScriptedServer
from tests.eval.judges import reference_judge
from tests.eval.test_judge import ITEMS

pytestmark = pytest.mark.unit

PAIRWISE = load_prompt("pairwise", "v1")
POLICY = CallPolicy(timeout_seconds=5.0, backoff_seconds=0.01, max_retries=2)


def test_another_server_or_other_weights_under_the_same_name_are_not_hits(
    tmp_path: Path,
) -> None:
    cache = JudgeCache(tmp_path / "cache")
    with ScriptedServer(reference_judge) as one, ScriptedServer(reference_judge) as two:
        def calls(server: ScriptedServer, digest: str | None) -> int:
            before = server.num_requests
            judge_pairs(JudgeClient(JudgeEndpoint(server.base_url, "judge", model_digest=digest),
                                    POLICY, cache), PAIRWISE, ITEMS[:2])
            return server.num_requests - before

        assert calls(one, "a" * 64) == 4  # two pairs, both orders
        assert calls(one, "a" * 64) == 0  # the same server and weights: all hits
        assert calls(two, "a" * 64) == 4  # same name and digest, another server
        assert calls(one, "b" * 64) == 4  # same server and name, other weights
        assert calls(one, None) == 4  # weights unknown: not the digest-keyed entries


@pytest.mark.parametrize("entry", [
    "{", "[]", "null", '{"text": 1}', '{"top_logprobs": []}',
    '{"text": "A", "top_logprobs": [["A"]]}', '{"text": "A", "top_logprobs": [["A", "x"]]}',
    '{"text": "A", "prompt_tokens": -1}', '{"text": "A", "completion_tokens": "2"}',
    "[" * 100_000,
], ids=lambda e: e[:24])
def test_a_malformed_entry_is_a_miss_that_is_called_again_and_overwritten(
    tmp_path: Path, entry: str,
) -> None:
    cache = JudgeCache(tmp_path / "cache")
    with ScriptedServer(reference_judge) as server:
        judge = JudgeClient(JudgeEndpoint(server.base_url, "judge"), POLICY, cache)
        first = judge_pairs(judge, PAIRWISE, ITEMS[:1])
        files = sorted((tmp_path / "cache").glob("*/*.json"))
        assert len(files) == 2
        for path in files:
            path.write_text(entry)
        again = JudgeClient(JudgeEndpoint(server.base_url, "judge"), POLICY, cache)
        assert judge_pairs(again, PAIRWISE, ITEMS[:1]) == first
        assert again.stats.cache_hits == 0 and server.num_requests == 4
    assert all("text" in json.loads(p.read_text()) for p in files)  # rewritten
