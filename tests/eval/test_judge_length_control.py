"""The length-controlled win rate: a judge that prefers longer answers cannot promote a model
that only got more verbose, nor fail one that got more concise."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from eval.config import EvalConfig, GateConfig, JudgeConfig
from eval.gate import FAIL, PASS, decide
from eval.harness import SampleResult
from eval.judge.client import JudgeEndpoint
from eval.judge.length_control import length_controlled_win_rate
from eval.judge.pairwise import PairItem, PairVerdict
from eval.judge.run import run_judge
from testing.scripted_server import Reply, ScriptedServer, chat_reply, parse_judge_prompt
from tests.eval.judges import human_preferred, reference_judge
from tests.eval.test_judge_calibration import harness

pytestmark = pytest.mark.unit

ITEMS = 40


def calibrated_but_verbose_judge(path: str, request: dict[str, Any], call: int) -> Reply:
    """Agrees with the annotators on the human-labelled pairs (so it earns the vote), and
    prefers the longer answer on everything else: the case length control exists for."""
    fields = parse_judge_prompt(request)
    if fields["kind"] == "single" or human_preferred(fields) is not None:
        return reference_judge(path, request, call)
    a, b = len(fields["a"]), len(fields["b"])
    return chat_reply("A" if a > b else "B" if b > a else "TIE")


def verbose_pairs(seed: int) -> tuple[list[SampleResult], list[SampleResult]]:
    """The same answer on both sides, the candidate's padded with filler of random length."""
    rng = random.Random(seed)
    short, long = [], []
    for i in range(ITEMS):
        doc = {"prompt": f"What is {i + 1} + 1?", "answer": str(i + 2)}
        filler = " To be precise, the answer is as stated above." * rng.randint(1, 6)
        short.append(SampleResult("shipyard_exact", i, f"h{i}", {"exact_match": 1.0},
                                  str(i + 2), doc))
        long.append(SampleResult("shipyard_exact", i, f"h{i}", {"exact_match": 1.0},
                                 str(i + 2) + filler, doc))
    return long, short


def config(**overrides: Any) -> EvalConfig:
    base: dict[str, Any] = {"gate": GateConfig(bootstrap_resamples=500,
                                               non_inferiority_margins={}),
                            "tasks": ["shipyard_scoring_check", "shipyard_exact"],
                            "judge": JudgeConfig(base_url="scripted", max_items=ITEMS,
                                                 calibration_limit_per_subset=10)}
    return EvalConfig(**(base | overrides))


def test_a_longer_preferring_judge_cannot_promote_verbosity(tmp_path: Path) -> None:
    verbose, plain = verbose_pairs(seed=1)
    with ScriptedServer(calibrated_but_verbose_judge) as server:
        endpoint = JudgeEndpoint(server.base_url, "verbose-judge")
        report = run_judge(config(), endpoint, verbose, plain, tmp_path)
        concise = run_judge(config(), endpoint, plain, verbose, tmp_path)
    assert report.gating, report.non_gating_reasons  # it earned the vote on human labels
    lc = report.length_control
    assert lc is not None and lc.num_pairs == ITEMS
    assert lc.win_rate == 1.0  # raw: the verbose candidate wins every pair
    assert lc.lc_win_rate == pytest.approx(0.5, abs=0.05)  # at equal length: no preference
    assert lc.length_coefficient > 3 and lc.candidate_longer_rate == 1.0
    assert lc.candidate_lengths.mean_chars > lc.champion_lengths.mean_chars
    assert lc.candidate_lengths.p90_chars >= lc.candidate_lengths.median_chars
    # The gate uses the length-controlled rate: the check shows both.
    decision = decide(config(), harness(verbose), harness(plain), report)
    (check,) = [c for c in decision.checks if c.name == "judge_win_rate"]
    assert "length-controlled win rate 0.5" in check.detail and "raw 1.000" in check.detail

    # The other way round: a concise candidate is not failed for being shorter.
    assert concise.length_control is not None and concise.length_control.win_rate == 0.0
    assert concise.length_control.lc_win_rate == pytest.approx(0.5, abs=0.05)
    assert decide(config(), harness(plain), harness(verbose), concise).outcome == PASS
    raw_only = _without_length_control(concise)
    assert decide(config(), harness(plain), harness(verbose), raw_only).outcome == FAIL


def _without_length_control(report: Any) -> Any:
    import dataclasses

    return dataclasses.replace(report, length_control=None)


def verdicts_for(items: list[PairItem], outcome: Any) -> list[PairVerdict]:
    score = {"candidate": 1.0, "champion": 0.0, "tie": 0.5}
    out = []
    for item in items:
        o = outcome(item)
        out.append(PairVerdict(item.item_id, "A", "B", o, score[o], False))
    return out


def test_lc_follows_a_real_quality_difference_when_lengths_vary() -> None:
    rng = random.Random(3)
    items = [PairItem(str(i), "q", "c" * rng.randint(5, 300), "h" * rng.randint(5, 300))
             for i in range(200)]
    # A judge that ignores length and prefers the candidate 80 % of the time.
    better = verdicts_for(items, lambda _: "candidate" if rng.random() < 0.8 else "champion")
    lc = length_controlled_win_rate(items, better, confidence=0.9, resamples=500, seed=0)
    assert lc.win_rate == pytest.approx(0.8, abs=0.06)
    assert lc.lc_win_rate == pytest.approx(lc.win_rate, abs=0.04)
    assert lc.lc_win_rate_interval_low < lc.lc_win_rate < lc.lc_win_rate_interval_high
    assert lc.lc_win_rate_interval_low > 0.7
    assert abs(lc.length_coefficient) < 1
    # Seeded: the same interval twice.
    again = length_controlled_win_rate(items, better, confidence=0.9, resamples=500, seed=0)
    assert again == lc


def test_ties_and_invalid_pairs() -> None:
    items = [PairItem(str(i), "q", "a" * (i + 1), "b" * (10 - i)) for i in range(10)]
    verdicts = verdicts_for(items, lambda _: "tie")
    verdicts[0] = PairVerdict("0", None, "A", "invalid", None, False)
    lc = length_controlled_win_rate(items, verdicts, confidence=0.9, resamples=200, seed=0)
    assert lc.num_pairs == 9 and lc.tie_rate == 1.0
    assert lc.win_rate == 0.5 and lc.lc_win_rate == pytest.approx(0.5)
    empty = length_controlled_win_rate([], [], confidence=0.9, resamples=200, seed=0)
    assert empty.num_pairs == 0 and empty.lc_win_rate != empty.lc_win_rate  # NaN
