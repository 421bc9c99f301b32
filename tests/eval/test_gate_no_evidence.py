"""A gate with nothing to check does not pass (issue #9): no champion and no floors or
ceilings is NO_EVIDENCE, which `require_pass` and the default verification policy refuse;
every shipped preset configures bounds, so a first run is gated on evidence."""

from __future__ import annotations

import pytest

from common.config import build_config, load_preset
from eval.config import EvalConfig, GateConfig
from eval.gate import FAIL, NO_EVIDENCE, PASS, decide
from eval.harness import HarnessResult, SampleResult
from registry.policy import load_policy

pytestmark = pytest.mark.unit

TASKS = ["shipyard_scoring_check", "shipyard_mc"]


def _candidate(mc_accuracy_items: list[int]) -> HarnessResult:
    samples = {
        "shipyard_scoring_check": [
            SampleResult("shipyard_scoring_check", i, f"c{i}", {"acc": 1.0}, None, {})
            for i in range(10)],
        "shipyard_mc": [SampleResult("shipyard_mc", i, f"d{i}", {"acc": float(v)}, None, {})
                        for i, v in enumerate(mc_accuracy_items)],
    }
    metrics = {task: {"acc": sum(s.metrics["acc"] for s in ss) / len(ss)}
               for task, ss in samples.items()}
    return HarnessResult("cand", "hf", metrics, samples, {}, {}, 0.0)


def test_no_champion_and_no_bounds_is_no_evidence_not_pass() -> None:
    decision = decide(EvalConfig(tasks=TASKS, gate=GateConfig(non_inferiority_margins={})),
                      _candidate([1] * 10), None)
    assert decision.outcome == NO_EVIDENCE
    assert decision.checks == []
    assert decision.reasons == ["no champion: absolute floors and ceilings only",
                                "nothing to gate on: no champion and no hard floors or ceilings"]


def test_one_bound_is_evidence_either_way() -> None:
    config = EvalConfig(tasks=TASKS, gate=GateConfig(non_inferiority_margins={},
                                                     hard_floors={"shipyard_mc": 0.5}))
    assert decide(config, _candidate([1] * 10), None).outcome == PASS
    assert decide(config, _candidate([0] * 10), None).outcome == FAIL


def test_the_default_policy_requires_pass_so_no_evidence_is_refused() -> None:
    # registry/verify.py check `policy_eval_gate` compares with this value; the end-to-end
    # refusal is tests/registry/test_trust_root.py::test_no_evidence_gate_is_refused_...
    assert load_policy().required_eval_gate == PASS


@pytest.mark.parametrize("preset", ["tiny", "gpu-1x", "gpu-8x"])
def test_every_preset_gates_a_first_run_on_bounds(preset: str) -> None:
    raw = load_preset(preset).get("eval", {})
    config = build_config(EvalConfig, "eval", raw)
    assert config.gate.hard_floors or config.gate.hard_ceilings, preset
