"""The judge against a scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from eval.config import EvalConfig, GateConfig, JudgeConfig
from eval.errors import EvalError
from eval.harness import SampleResult
from eval.judge import calibration as calib
from eval.judge.cache import JudgeCache
from eval.judge.client import (
    CallPolicy,
    JudgeClient,
    JudgeEndpoint,
    JudgeRequest,
    first_served_model,
)
from eval.judge.pairwise import PairItem, judge_pairs, summarise
from eval.judge.prompts import load_prompt
from eval.judge.rubric import GradeItem, grade
from eval.judge.run import run_judge
from testing.scripted_server import Reply, ScriptedServer, chat_reply, parse_judge_prompt
from tests.eval.judges import chatty_judge, first_position_judge, logprob, reference_judge

pytestmark = pytest.mark.unit

PAIRWISE = load_prompt("pairwise", "v1")
SINGLE = load_prompt("single", "v1")
ITEMS = [PairItem(f"doc{i}", f"What is {i} + 1?", str(i + 1), str(i + 2)) for i in range(6)]


def client(server: ScriptedServer, cache: JudgeCache | None = None, **policy: float
           ) -> JudgeClient:
    defaults = {"timeout_seconds": 5.0, "backoff_seconds": 0.01, "max_retries": 2}
    return JudgeClient(JudgeEndpoint(server.base_url, "scripted-judge"),
                       CallPolicy(**(defaults | policy)), cache)  # type: ignore[arg-type]


def test_known_verdicts_both_orders_and_token_accounting() -> None:
    with ScriptedServer(reference_judge) as server:
        judge = client(server)
        verdicts = judge_pairs(judge, PAIRWISE, ITEMS)
    assert [v.outcome for v in verdicts] == ["candidate"] * 6
    assert [(v.candidate_first, v.champion_first) for v in verdicts] == [("A", "B")] * 6
    summary = summarise(verdicts, confidence=0.9, resamples=200, seed=0)
    assert summary.win_rate == 1.0 and summary.position_consistency_rate == 1.0
    assert summary.invalid_output_rate == 0.0
    assert server.num_requests == 12  # every pair judged in both orders
    assert judge.stats.prompt_tokens == 12 * 50 and judge.stats.completion_tokens == 12
    first = server.requests[0][1]
    assert server.requests[0][0] == "/v1/chat/completions"
    assert first["temperature"] == 0.0 and first["logprobs"] is True
    assert first["messages"][0]["role"] == "user"


def test_position_bias_makes_inconsistent_pairs_count_as_ties() -> None:
    with ScriptedServer(first_position_judge) as server:
        verdicts = judge_pairs(client(server), PAIRWISE, ITEMS)
    summary = summarise(verdicts, confidence=0.9, resamples=200, seed=0)
    assert {v.outcome for v in verdicts} == {"inconsistent"}
    assert summary.win_rate == 0.5
    assert summary.position_consistency_rate == 0.0
    assert summary.first_position_rate == 1.0


def test_expected_scores_from_verdict_logprobs() -> None:
    def script(path: str, request: dict, call: int) -> Reply:
        fields = parse_judge_prompt(request)
        if fields["kind"] == "single":
            return chat_reply("4", [("4", logprob(0.6)), ("5", logprob(0.3)),
                                    ("hello", logprob(0.1))])
        right = "A" if fields["a"].startswith("1") or fields["a"] == "2" else "B"
        other = "B" if right == "A" else "A"
        # "T" is the first token of "TIE" for some tokenizers: it counts as TIE.
        return chat_reply(right, [(right, logprob(0.8)), (other, logprob(0.1)),
                                  ("T", logprob(0.1))])

    with ScriptedServer(script) as server:
        judge = client(server)
        (verdict,) = judge_pairs(judge, PAIRWISE, [PairItem("d", "What is 1 + 1?", "2", "3")])
        (graded,) = grade(judge, SINGLE, [GradeItem("d", "What is 1 + 1?", "2", "2")])
    assert verdict.scored_from_logprobs
    assert verdict.score == pytest.approx(0.8 + 0.1 / 2)
    # Renormalised over the digits: (4*0.6 + 5*0.3) / 0.9
    assert graded.verdict == 4 and graded.score == pytest.approx((2.4 + 1.5) / 0.9)


def test_malformed_outputs_are_invalid_and_make_the_judge_non_gating(tmp_path: Path) -> None:
    samples = _samples(["2", "3"], ["2", "5"])
    with ScriptedServer(chatty_judge) as server:
        report = run_judge(EvalConfig(judge=JudgeConfig(
            base_url=server.base_url, calibration_limit_per_subset=5)), JudgeEndpoint(
            server.base_url, "scripted-judge"), samples[0], samples[1], tmp_path)
    assert report.pairwise is not None and report.pairwise.invalid_output_rate == 1.0
    assert report.pairwise.outcomes["invalid"] == 2
    assert not report.gating
    assert any("pairwise invalid-output rate 1.000 > eval.judge.max_invalid_output_rate 0.1" in r
               for r in report.non_gating_reasons)


def test_429_is_retried_after_the_retry_after_delay() -> None:
    def script(path: str, request: dict, call: int) -> Reply:
        if call == 0:
            return Reply(429, {"error": "slow down"}, {"Retry-After": "0.3"})
        return chat_reply("TIE")

    with ScriptedServer(script) as server:
        judge = client(server, concurrency=1)
        started = time.perf_counter()
        (reply,) = judge.complete_all([JudgeRequest("p", "k")])
        elapsed = time.perf_counter() - started
    assert reply.text == "TIE" and judge.stats.retries == 1
    assert elapsed >= 0.3  # honoured Retry-After rather than the 0.01 s backoff


def test_5xx_retries_are_bounded_and_a_failed_call_is_an_invalid_verdict() -> None:
    with ScriptedServer(lambda path, request, call: Reply(503, "busy")) as server:
        judge = client(server, max_retries=2)
        verdicts = judge_pairs(judge, PAIRWISE, ITEMS[:1])
    assert server.num_requests == 2 * 3  # two orders x (1 try + 2 retries)
    assert verdicts[0].outcome == "invalid"
    assert judge.stats.failures == 2 and judge.stats.errors == {"HTTP 503": 2}


def test_a_hung_server_times_out_and_is_retried() -> None:
    def script(path: str, request: dict, call: int) -> Reply:
        return chat_reply("A", ) if call >= 1 else Reply(200, {}, delay_seconds=2.0)

    with ScriptedServer(script) as server:
        judge = client(server, timeout_seconds=0.3, max_retries=1, concurrency=1)
        started = time.perf_counter()
        (reply,) = judge.complete_all([JudgeRequest("p", "k")])
    assert reply.text == "A" and judge.stats.retries == 1
    assert time.perf_counter() - started < 2.0  # did not wait for the hung answer


def test_a_rejected_request_is_a_configuration_error() -> None:
    with ScriptedServer(lambda p, r, c: Reply(404, {"error": "no such model"})) as server, \
            pytest.raises(EvalError, match="HTTP 404") as info:
        client(server).complete_all([JudgeRequest("p", "k")])
    assert info.value.code == "EVAL_JUDGE_REQUEST_REJECTED"
    assert server.num_requests == 1  # not retried


def test_cache_hit_makes_no_call(tmp_path: Path) -> None:
    cache = JudgeCache(tmp_path / "cache")
    with ScriptedServer(reference_judge) as server:
        first = judge_pairs(client(server, cache), PAIRWISE, ITEMS)
        calls_after_first = server.num_requests
        second_client = client(server, cache)
        second = judge_pairs(second_client, PAIRWISE, ITEMS)
        assert server.num_requests == calls_after_first == 12
        assert second_client.stats.cache_hits == 12
        # Another judge model is another key: it does call.
        other = JudgeClient(JudgeEndpoint(server.base_url, "another-judge"), CallPolicy(),
                            cache)
        judge_pairs(other, PAIRWISE, ITEMS[:1])
        assert server.num_requests == 14
    assert second == first


def test_concurrency_is_bounded() -> None:
    def slow(path: str, request: dict, call: int) -> Reply:
        reply = chat_reply("A")
        reply.delay_seconds = 0.1
        return reply

    with ScriptedServer(slow) as server:
        client(server, concurrency=3).complete_all(
            [JudgeRequest(f"p{i}", f"k{i}") for i in range(12)])
    assert 2 <= server.max_in_flight <= 3


def test_calibration_kappa_of_a_reference_judge_and_a_biased_one() -> None:
    pairs = calib.load_pairs(calib.calibration_path("v1"))
    assert len(pairs) == 60 and {p.preferred for p in pairs} == {"A", "B"}
    with ScriptedServer(reference_judge) as server:
        good = calib.calibrate(client(server), PAIRWISE, pairs, version="v1", min_kappa=0.6)
    assert good.kappa == pytest.approx(1.0) and good.agreement == 1.0 and good.passed
    assert good.label_source.startswith("reference-labelled")
    with ScriptedServer(first_position_judge) as server:
        biased = calib.calibrate(client(server), PAIRWISE, pairs, version="v1", min_kappa=0.6)
    # Every pair inconsistent -> judge label TIE for all: p_o = 0, p_e = 0 -> kappa 0.
    assert biased.judge_labels == {"TIE": 60}
    assert biased.kappa == pytest.approx(0.0) and not biased.passed


def test_run_judge_gates_only_with_a_champion_and_a_calibrated_judge(tmp_path: Path) -> None:
    candidate, champion = _samples(["2", "3", "4"], ["2", "9", "9"])
    config = EvalConfig(judge=JudgeConfig(base_url="set", calibration_limit_per_subset=10),
                        gate=GateConfig(bootstrap_resamples=200))
    with ScriptedServer(reference_judge) as server:
        endpoint = JudgeEndpoint(server.base_url, first_served_model(server.base_url))
        report = run_judge(config, endpoint, candidate, champion, tmp_path)
        alone = run_judge(config, endpoint, candidate, None, tmp_path)
    assert endpoint.model == "scripted-judge"
    assert report.gating and report.non_gating_reasons == []
    assert report.calibration is not None and report.calibration.kappa == pytest.approx(1.0)
    assert report.calibration.num_pairs == 80 and report.judge_kind == "judge"
    assert report.pairwise is not None and report.pairwise.outcomes["candidate"] == 2
    assert report.pairwise.outcomes["tie"] == 1  # both right
    assert report.rubric_candidate is not None and report.rubric_candidate.mean_score == 5.0
    # Equal lengths on every side: no decisive pair says anything about verbosity.
    assert report.lengths["decisive_pairs_with_length_difference"] == 0
    assert math.isnan(report.lengths["longer_answer_win_rate"])
    # The champion's first answer equals the candidate's: its rubric grade is a cache hit.
    assert report.usage["cache_hits"] == 1 and report.usage["prompt_tokens"] > 0
    assert not alone.gating and "no champion" in alone.non_gating_reasons[0]
    assert alone.usage["cache_hits"] > 0  # calibration verdicts came from the cache


def test_prompt_file_header_must_match_its_name(tmp_path: Path) -> None:
    (tmp_path / "pairwise_v9.txt").write_text("VERSION: pairwise_v1\n${question}")
    with pytest.raises(EvalError, match="expected 'VERSION: pairwise_v9'"):
        load_prompt("pairwise", "v9", tmp_path)


def _samples(candidate: list[str], champion: list[str]
             ) -> tuple[list[SampleResult], list[SampleResult]]:
    def make(outputs: list[str]) -> list[SampleResult]:
        return [SampleResult("shipyard_exact", i, f"h{i}", {"exact_match": 0.0}, out,
                             {"prompt": f"What is {i + 1} + 1?", "answer": str(i + 2)})
                for i, out in enumerate(outputs)]

    return make(candidate), make(champion)
