"""`EvalConfig`'s nested gate section (`eval.gate`): its Literal task names, the deprecated flat
keys, the presets, and the gate settings of old (flat) and new (nested) eval reports."""

from __future__ import annotations

import copy
import dataclasses
import typing
from typing import Any

import pytest

from common.errors import StageError
from eval.config import RENAMED_KEYS, EvalConfig, GateConfig
from eval.config_gate import SuiteTask, report_gate_config
from eval.errors import EvalError
from eval.report import _comparisons_table
from eval.report_plot import metrics_figure
from eval.suite.specs import TASK_SPECS
from eval.summary import attestation_claims
from tasks.resolve import resolve

pytestmark = pytest.mark.unit

GATE_FIELDS = ["non_inferiority_margins", "must_improve", "confidence", "power",
               "bootstrap_resamples", "bootstrap_seed", "min_paired_items", "hard_floors",
               "hard_ceilings"]


def test_the_gate_section_holds_the_gate_settings_and_their_task_names_are_literals() -> None:
    assert [f.name for f in dataclasses.fields(GateConfig)] == GATE_FIELDS
    assert set(typing.get_args(SuiteTask)) == set(TASK_SPECS)
    assert not {f.name for f in dataclasses.fields(EvalConfig)} & set(GATE_FIELDS)
    assert {k: v for k, v in RENAMED_KEYS.items() if v.startswith("gate.")} == {
        name: f"gate.{name}" for name in GATE_FIELDS}


@pytest.mark.parametrize("preset", ["tiny", "smol", "gpu-1x", "gpu-8x", "gpu-2x8"])
def test_every_preset_uses_the_nested_form(preset: str, caplog: pytest.LogCaptureFixture
                                           ) -> None:
    with caplog.at_level("WARNING", logger="common.config"):
        gate = resolve(preset, []).eval.gate
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert gate.hard_floors or gate.hard_ceilings or gate.must_improve, preset


def test_flat_gate_overrides_still_work_and_say_what_replaces_them(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="common.config"):
        gate = resolve("tiny", ["eval.min_paired_items=10", "eval.confidence=0.9"]).eval.gate
    assert (gate.min_paired_items, gate.confidence) == (10, 0.9)
    assert gate.hard_ceilings == {"shipyard_ppl": 1.0}  # the preset's nested key still holds
    lines = [r.getMessage() for r in caplog.records]
    assert any("eval.min_paired_items is deprecated" in line
               and "use eval.gate.min_paired_items" in line for line in lines), lines
    assert resolve("tiny", ["eval.gate.power=0.9"]).eval.gate.power == 0.9


@pytest.mark.parametrize(("overrides", "code", "named"), [
    (["eval.hard_ceilings={shipyard_ppl: 2.0}"], "CONFIG_INVALID",  # tiny sets gate.hard_ceilings
     "eval.hard_ceilings and eval.gate.hard_ceilings are both given"),
    (["eval.gate.must_improve=[shipyard_mcq]"], "CONFIG_INVALID",
     "eval.gate.must_improve[0]='shipyard_mcq': must be one of"),
    (["eval.gate.hard_floors={nope: 0.5}"], "CONFIG_INVALID", "eval.gate.hard_floors key 'nope'"),
    (["eval.gate.min_paired=3"], "CONFIG_UNKNOWN_KEY", "config section 'eval.gate'"),
    (["eval.gate.confidence=high"], "CONFIG_TYPE", "eval.gate.confidence='high'"),
    (["eval.gate.power=0.2"], "EVAL_CONFIG_INVALID", "eval.gate.power=0.2"),
    (["eval.gate.must_improve=[ifeval]"], "EVAL_CONFIG_INVALID",
     "eval.gate.must_improve=['ifeval']: names tasks ['ifeval'] that are not in eval.tasks"),
])
def test_bad_gate_settings_name_the_dotted_key(overrides: list[str], code: str,
                                               named: str) -> None:
    with pytest.raises(StageError) as info:
        resolve("tiny", overrides)
    assert info.value.code == code and named in info.value.message, info.value.message


def test_a_gate_built_in_code_checks_its_task_names() -> None:
    with pytest.raises(EvalError) as info:
        GateConfig(hard_ceilings={"perplexity": 1.0})  # type: ignore[dict-item]
    assert "eval.gate.hard_ceilings=" in info.value.message and "not suite tasks" in (
        info.value.message)


def _report(config: dict[str, Any]) -> dict[str, Any]:
    comparison = {"task": "shipyard_mc", "metric": "acc", "num_pairs": 40, "candidate_mean": 0.6,
                  "champion_mean": 0.58, "improvement": 0.02, "interval_low": -0.01,
                  "interval_high": 0.05, "mcnemar_p_value": 0.5,
                  "minimum_detectable_effect": 0.1}
    return {
        "config": config,
        "metrics": {"shipyard_mc": {"acc": 0.6}},
        "samples": {"candidate": {"shipyard_mc": [{}] * 40}},
        "gate": {"checks": [{"name": "floor:shipyard_mc", "passed": True},
                            {"name": "non_inferiority:shipyard_mc", "passed": True}],
                 "comparisons": [comparison]},
        "champion_metrics": {"shipyard_mc": {"acc": 0.58}},
        "judge": {}, "champion": {"digest": "c" * 64},
    }


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """The same config in the layout of reports written before the gate section."""
    flat = copy.deepcopy(config)
    return {**{k: v for k, v in flat.items() if k != "gate"}, **flat["gate"]}


def test_old_and_new_reports_give_the_same_claims_and_tables() -> None:
    config = dataclasses.asdict(EvalConfig(gate=GateConfig(
        hard_floors={"shipyard_mc": 0.3}, confidence=0.9,
        non_inferiority_margins={"shipyard_mc": 0.04})))
    assert config["gate"]["hard_floors"] == {"shipyard_mc": 0.3}
    assert not set(GATE_FIELDS) & set(config)
    new, old = _report(config), _report(_flat(config))
    claims = attestation_claims(new)
    assert claims == attestation_claims(old)
    assert claims["confidence"] == 0.9
    floor, non_inferiority = claims["checks"]
    assert (floor["threshold"], non_inferiority["threshold"]) == (0.3, -0.04)
    assert _comparisons_table(new) == _comparisons_table(old)
    assert "80% interval" in _comparisons_table(new) and "0.04" in _comparisons_table(new)
    assert metrics_figure(new) is not None and metrics_figure(old) is not None
    assert report_gate_config(None) == {}
