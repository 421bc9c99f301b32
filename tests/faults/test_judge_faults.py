"""The judge part of evaluate against a judge that times out on every call, answers 429 on
every call, or answers garbage: `run_judge` (what evaluate runs after the harness) returns a
report in bounded work, with a named outcome (the judge is non-gating, and says why), never
an exception and never a hang.

Per-call behaviour is tests/eval's: a hung server times out and is retried
(test_judge.py::test_a_hung_server_times_out_and_is_retried), hostile Retry-After values
(nan, inf, 1e999, dates) are bounded by `max_backoff_seconds`
(test_judge_hostile.py::test_hostile_retry_after_does_not_hang), garbage bodies become
invalid outputs (test_judge_hostile.py::test_garbage_bodies_become_invalid_outputs). This
file checks the stage-level consequence: every call failing, through calibration, pairwise
and rubric grading, bounded by the configured retries (garbage is retried like a transport
failure; the request count is asserted against that bound).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eval.config import EvalConfig, JudgeConfig
from eval.harness import SampleResult
from eval.judge import calibration as calib
from eval.judge.client import JudgeEndpoint
from eval.judge.run import run_judge
from testing.scripted_server import Reply, ScriptedServer

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ITEMS = 4
RETRIES = 1
HUMAN_PAIRS_PER_SUBSET = 3


def _samples(outputs: list[str]) -> list[SampleResult]:
    return [SampleResult("shipyard_exact", i, f"h{i}", {"exact_match": 0.0}, out,
                         {"prompt": f"What is {i + 1} + 1?", "answer": str(i + 2)})
            for i, out in enumerate(outputs)]


def _timing_out(path: str, request: dict[str, Any], call: int) -> Reply:
    return Reply(200, {}, delay_seconds=1.0)  # longer than the client's 0.2 s timeout


def _rate_limited(path: str, request: dict[str, Any], call: int) -> Reply:
    return Reply(429, {"error": "slow down"}, headers={"Retry-After": "0.01"})


def _garbage(path: str, request: dict[str, Any], call: int) -> Reply:
    return Reply(200, "<html>not json" if call % 2 else '{"choices": "nope"}')


@pytest.mark.parametrize("script", [_timing_out, _rate_limited, _garbage],
                         ids=["times-out", "429-forever", "garbage"])
def test_a_judge_failing_every_call_makes_it_non_gating_in_bounded_work(
        script: Any, tmp_path: Path) -> None:
    config = EvalConfig(judge=JudgeConfig(
        base_url="scripted", max_items=ITEMS, timeout_seconds=0.2, max_retries=RETRIES,
        backoff_seconds=0.01, concurrency=8, calibration_subsets=["natural", "mt_bench"],
        calibration_limit_per_subset=HUMAN_PAIRS_PER_SUBSET))
    with ScriptedServer(script) as server:
        report = run_judge(config, JudgeEndpoint(server.base_url, "scripted-judge"),
                           _samples(["2"] * ITEMS), _samples(["3"] * ITEMS), None)
    # the named outcome: the judge does not gate, and the reasons say it had no usable answer
    assert report.status == "ok" and not report.gating
    assert report.calibration is not None and report.pairwise is not None
    assert report.pairwise.invalid_output_rate == 1.0
    assert any("invalid-output rate 1.000" in r for r in report.non_gating_reasons), \
        report.non_gating_reasons
    # bounded work: every prompt is tried at most 1 + RETRIES times, then given up
    pairs = len(calib.load_pairs(calib.calibration_path(config.judge.calibration_version)))
    pairs += 2 * HUMAN_PAIRS_PER_SUBSET  # the human-labelled calibration (LLMBar)
    prompts = 2 * pairs + 2 * ITEMS + 2 * ITEMS  # calibration and pairwise in both orders,
    assert prompts <= server.num_requests <= prompts * (1 + RETRIES)  # a rubric grade each
