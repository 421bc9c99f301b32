"""The promotion gate on constructed per-item results."""

from __future__ import annotations

import random
from typing import Any

import pytest

from eval.config import EvalConfig, GateConfig, JudgeConfig
from eval.errors import EvalError
from eval.gate import FAIL, NO_EVIDENCE, PASS, decide
from eval.harness import HarnessResult, SampleResult
from eval.judge.pairwise import PairwiseSummary
from eval.judge.run import JudgeReport

pytestmark = pytest.mark.unit

TASKS = ["shipyard_scoring_check", "shipyard_mc"]


def result(digest: str, mc_correct: list[int], *, scoring_check: float = 1.0,
           hash_prefix: str = "doc") -> HarnessResult:
    samples = {
        "shipyard_scoring_check": [
            SampleResult("shipyard_scoring_check", i, f"c{i}", {"acc": scoring_check}, None, {})
            for i in range(10)],
        "shipyard_mc": [SampleResult("shipyard_mc", i, f"{hash_prefix}{i}", {"acc": float(v)},
                                     None, {}) for i, v in enumerate(mc_correct)],
    }
    metrics = {task: {"acc": sum(s.metrics["acc"] for s in ss) / len(ss)}
               for task, ss in samples.items()}
    return HarnessResult(digest, "hf", metrics, samples, {}, {}, 0.0)


def config(**overrides: object) -> EvalConfig:
    gate: dict[str, Any] = {"non_inferiority_margins": {"shipyard_mc": 0.05},
                            "bootstrap_resamples": 1000, "min_paired_items": 30}
    return EvalConfig(tasks=TASKS, gate=GateConfig(**(gate | overrides)))


def flips(n: int, p: float, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [int(rng.random() < p) for _ in range(n)]


def test_clearly_better_candidate_passes() -> None:
    champion = flips(200, 0.4, seed=1)
    candidate = [1 if v or i % 3 == 0 else 0 for i, v in enumerate(champion)]  # fixes some
    decision = decide(config(), result("cand", candidate), result("champ", champion))
    assert decision.outcome == PASS and decision.mode == "champion"
    (comparison,) = decision.comparisons
    assert comparison.improvement > 0.1 and comparison.interval_low > 0
    assert comparison.mcnemar_p_value is not None and comparison.mcnemar_p_value < 0.001
    assert comparison.champion_only_correct == 0


def test_clearly_worse_candidate_fails_with_the_numbers() -> None:
    champion = flips(200, 0.8, seed=2)
    candidate = [v if i % 3 else 0 for i, v in enumerate(champion)]  # breaks a third
    decision = decide(config(), result("cand", candidate), result("champ", champion))
    assert decision.outcome == FAIL
    assert any("shipyard_mc acc" in r and "-margin -0.0500" in r for r in decision.reasons)
    assert decision.comparisons[0].interval_high < 0


def test_small_loss_within_the_margin_passes() -> None:
    champion = flips(400, 0.5, seed=3)
    candidate = list(champion)
    for i in range(0, 400, 100):  # 4 items lost out of 400: -1 point, margin 5 points
        candidate[i] = 0 if champion[i] else candidate[i]
    decision = decide(config(), result("cand", candidate), result("champ", champion))
    assert decision.outcome == PASS, decision.reasons
    comparison = decision.comparisons[0]
    assert -0.05 < comparison.interval_low <= 0 <= comparison.improvement + 0.02


def test_too_few_paired_items_fails() -> None:
    champion = flips(20, 0.5, seed=4)
    decision = decide(config(), result("cand", [1] * 20), result("champ", champion))
    assert decision.outcome == FAIL
    assert "20 paired items < min_paired_items 30" in decision.reasons[0]


def test_items_pair_by_document_hash_not_position() -> None:
    # Same documents in another order: still paired; disjoint documents: nothing to pair.
    values = flips(60, 0.5, seed=5)
    shuffled = result("champ", values)
    shuffled.samples["shipyard_mc"].reverse()
    assert decide(config(), result("cand", values), shuffled).comparisons[0].improvement == 0
    other_docs = result("champ", values, hash_prefix="other")
    decision = decide(config(), result("cand", values), other_docs)
    assert decision.outcome == FAIL and "0 paired items" in decision.reasons[0]


def test_no_champion_applies_absolute_floors_only() -> None:
    weak = result("cand", [0] * 9 + [1])  # acc 0.1
    passed = decide(config(), weak, None)
    # nothing to check (no champion, no floors): no evidence, not a pass (issue #9)
    assert passed.outcome == NO_EVIDENCE and passed.mode == "absolute"
    assert "no champion: absolute floors and ceilings only" in passed.notes
    floored = decide(config(hard_floors={"shipyard_mc": 0.3}), weak, None)
    assert floored.outcome == FAIL
    assert floored.reasons == ["shipyard_mc acc 0.1000 < floor 0.3"]


def test_config_refuses_rules_it_cannot_apply() -> None:
    with pytest.raises(EvalError, match="bound the wrong side"):
        GateConfig(hard_floors={"shipyard_ppl": 1.0})
    with pytest.raises(EvalError, match="must include 'shipyard_scoring_check'"):
        EvalConfig(tasks=["shipyard_mc"])
    with pytest.raises(EvalError, match=r"must include 'shipyard_exact' \(eval\.judge\.task\) "
                                        "when a judge"):
        EvalConfig(tasks=["shipyard_scoring_check"],
                   judge=JudgeConfig(base_url="http://127.0.0.1:1"))


def _judge(low: float, gating: bool = True) -> JudgeReport:
    summary = PairwiseSummary(40, 40, 0.0, 1.0, 0.5, {}, 0, low + 0.05, low, low + 0.1)
    return JudgeReport("ok", "j", "http://x", gating=gating, pairwise=summary,
                       non_gating_reasons=[] if gating else ["calibration kappa 0.1 < 0.6"])


def test_gating_judge_win_rate_below_margin_fails() -> None:
    same = flips(100, 0.5, seed=6)
    decision = decide(config(), result("c", same), result("h", same), _judge(low=0.30))
    assert decision.outcome == FAIL
    assert any(r.startswith("judge win rate") for r in decision.reasons)
    assert decide(config(), result("c", same), result("h", same),
                  _judge(low=0.48)).outcome == PASS


def test_non_gating_judge_is_reported_not_decisive() -> None:
    same = flips(100, 0.5, seed=6)
    decision = decide(config(), result("c", same), result("h", same),
                      _judge(low=0.1, gating=False))
    assert decision.outcome == PASS
    assert "judge non-gating: calibration kappa 0.1 < 0.6" in decision.notes
