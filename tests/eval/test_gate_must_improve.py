"""The gate for a fine-tuned chat model: a strict win on the skill task, non-inferiority on
IFEval, on scripted per-item results paired by document hash."""

from __future__ import annotations

import random
from typing import Any

import pytest

from eval.config import EvalConfig, GateConfig
from eval.errors import EvalError
from eval.gate import FAIL, PASS, decide
from eval.harness import HarnessResult, SampleResult

pytestmark = pytest.mark.unit

TASKS = ["shipyard_scoring_check", "ifeval", "shipyard_skill"]
IFEVAL_METRIC = "prompt_level_strict_acc"


def samples(task: str, metric: str, values: list[int], *, order: list[int] | None = None
            ) -> list[SampleResult]:
    # Documents hash as f"{task}-{i}"; `order` lists them as another run may return them.
    indices = order or list(range(len(values)))
    return [SampleResult(task, position, f"{task}-{i}", {metric: float(values[i])}, "answer",
                         {}) for position, i in enumerate(indices)]


def result(digest: str, skill: list[int], ifeval: list[int], *, chat: bool = True,
           reverse: bool = False) -> HarnessResult:
    by_task = {
        "shipyard_scoring_check": samples("shipyard_scoring_check", "acc", [1] * 40),
        "shipyard_skill": samples("shipyard_skill", "exact_match", skill,
                                  order=list(reversed(range(len(skill)))) if reverse else None),
        "ifeval": samples("ifeval", IFEVAL_METRIC, ifeval,
                          order=list(reversed(range(len(ifeval)))) if reverse else None),
    }
    metrics = {task: {s_metric: sum(s.metrics[s_metric] for s in ss) / len(ss)
                      for s_metric in ss[0].metrics} for task, ss in by_task.items()}
    return HarnessResult(digest, "hf", metrics, by_task, {}, {}, 0.0,
                         config={"chat_template_applied": chat})


def config(**overrides: object) -> EvalConfig:
    gate: dict[str, Any] = {"non_inferiority_margins": {"ifeval": 0.05},
                            "must_improve": ["shipyard_skill"], "bootstrap_resamples": 1000,
                            "min_paired_items": 30}
    return EvalConfig(tasks=TASKS, gate=GateConfig(**(gate | overrides)))


def flips(n: int, p: float, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [int(rng.random() < p) for _ in range(n)]


def improved(champion: list[int], every: int) -> list[int]:
    """The champion's results with every `every`-th wrong item fixed."""
    return [1 if v or i % every == 0 else 0 for i, v in enumerate(champion)]


def test_skill_win_and_ifeval_kept_passes_with_both_checks() -> None:
    skill_champion = flips(120, 0.3, seed=1)
    ifeval_champion = flips(100, 0.4, seed=2)
    decision = decide(config(),
                      result("cand", improved(skill_champion, 2), ifeval_champion),
                      result("champ", skill_champion, ifeval_champion))
    assert decision.outcome == PASS, decision.reasons
    checks = {c.name: c for c in decision.checks}
    assert checks["improvement:shipyard_skill"].passed
    assert "must-improve threshold +0.0000" in checks["improvement:shipyard_skill"].detail
    assert checks["non_inferiority:ifeval"].passed
    skill = next(c for c in decision.comparisons if c.task == "shipyard_skill")
    assert skill.interval_low > 0 and skill.champion_only_correct == 0


def test_no_improvement_on_the_skill_fails_even_when_nothing_got_worse() -> None:
    skill_champion = flips(120, 0.5, seed=3)
    ifeval_champion = flips(100, 0.4, seed=4)
    decision = decide(config(), result("cand", skill_champion, ifeval_champion),
                      result("champ", skill_champion, ifeval_champion))
    assert decision.outcome == FAIL
    assert decision.reasons == [next(c.detail for c in decision.checks
                                     if c.name == "improvement:shipyard_skill")]
    assert "<= must-improve threshold" in decision.reasons[0]


def test_a_small_skill_gain_the_interval_cannot_separate_from_zero_fails() -> None:
    skill_champion = flips(60, 0.5, seed=5)
    candidate = list(skill_champion)
    candidate[skill_champion.index(0)] = 1  # one item better out of 60
    decision = decide(config(), result("cand", candidate, [1] * 40),
                      result("champ", skill_champion, [1] * 40))
    assert decision.outcome == FAIL
    comparison = next(c for c in decision.comparisons if c.task == "shipyard_skill")
    assert comparison.improvement > 0 >= comparison.interval_low


def test_skill_win_bought_with_an_ifeval_regression_fails() -> None:
    skill_champion = flips(120, 0.3, seed=6)
    ifeval_champion = flips(100, 0.7, seed=7)
    ifeval_candidate = [v if i % 3 else 0 for i, v in enumerate(ifeval_champion)]
    decision = decide(config(), result("cand", improved(skill_champion, 2), ifeval_candidate),
                      result("champ", skill_champion, ifeval_champion))
    assert decision.outcome == FAIL
    assert [c.name for c in decision.checks if not c.passed] == ["non_inferiority:ifeval"]
    assert "ifeval prompt_level_strict_acc" in decision.reasons[0]


def test_generation_tasks_pair_by_document_hash_whatever_the_order() -> None:
    skill_champion = flips(120, 0.3, seed=8)
    ifeval_champion = flips(100, 0.4, seed=9)
    in_order = decide(config(), result("cand", improved(skill_champion, 2), ifeval_champion),
                      result("champ", skill_champion, ifeval_champion))
    reversed_run = decide(config(), result("cand", improved(skill_champion, 2), ifeval_champion,
                                           reverse=True),
                          result("champ", skill_champion, ifeval_champion))
    assert reversed_run.outcome == in_order.outcome == PASS
    for ours, theirs in zip(in_order.comparisons, reversed_run.comparisons, strict=True):
        assert (ours.task, ours.improvement, ours.interval_low) == (
            theirs.task, theirs.improvement, theirs.interval_low)
    ifeval = next(c for c in in_order.comparisons if c.task == "ifeval")
    assert ifeval.improvement == 0 and ifeval.mcnemar_p_value == 1.0


def test_too_few_skill_pairs_fails_the_improvement_check() -> None:
    decision = decide(config(), result("cand", [1] * 10, [1] * 40),
                      result("champ", [0] * 10, [1] * 40))
    assert decision.outcome == FAIL
    assert any("10 paired items < min_paired_items 30: too few to show an improvement" in r
               for r in decision.reasons)


def test_without_a_champion_must_improve_is_a_note_not_a_check() -> None:
    decision = decide(config(), result("cand", [1] * 40, [1] * 40), None)
    assert not any(c.name.startswith("improvement:") for c in decision.checks)
    assert any("must_improve ['shipyard_skill'] not checked" in n for n in decision.notes)


def test_mixed_prompt_formats_are_noted() -> None:
    decision = decide(config(), result("cand", [1] * 40, [1] * 40, chat=True),
                      result("champ", [0] * 40, [1] * 40, chat=False))
    assert any("mix prompt formats" in n for n in decision.notes)


def test_must_improve_must_name_evaluated_tasks() -> None:
    with pytest.raises(EvalError) as info:
        config(must_improve=["shipyard_mc"])
    assert info.value.code == "EVAL_CONFIG_INVALID" and "must_improve" in info.value.message
