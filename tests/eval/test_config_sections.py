"""`EvalConfig`'s nested judge section (`eval.judge`), its Literal choice fields, the deprecated
flat `judge_*` keys, and the nested config in the report and through Flyte."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from common.errors import StageError
from eval.config import RENAMED_KEYS, EvalConfig, JudgeConfig, JudgedTask
from eval.errors import EvalError
from eval.harness import MODEL_PATHS
from eval.suite.specs import TASK_SPECS
from eval.summary import attestation_claims, judge_margin
from serving.engine import ENGINE_KINDS
from tasks.resolve import resolve

pytestmark = pytest.mark.unit


def test_the_choice_fields_are_literals_that_match_their_owners() -> None:
    hints = typing.get_type_hints(EvalConfig)
    assert set(typing.get_args(hints["model_path"])) == set(MODEL_PATHS)
    assert set(typing.get_args(hints["serving_engine"])) == set(ENGINE_KINDS)
    generating = {task for task, spec in TASK_SPECS.items() if spec.generates}
    assert set(typing.get_args(JudgedTask)) == generating


def test_every_flat_judge_key_maps_onto_a_judge_field() -> None:
    judge_fields = [f.name for f in dataclasses.fields(JudgeConfig)]
    assert len(judge_fields) == 26
    judge_renames = {k: v for k, v in RENAMED_KEYS.items() if v.startswith("judge.")}
    assert {f"judge_{name}": f"judge.{name}" for name in judge_fields} == judge_renames
    assert not {f.name for f in dataclasses.fields(EvalConfig)} & set(RENAMED_KEYS)


def test_the_smol_preset_uses_the_nested_section() -> None:
    judge = resolve("smol", []).eval.judge
    assert (judge.source, judge.task, judge.max_items, judge.calibration_limit_per_subset) == (
        "package:smollm2-135m-instruct", "ifeval", 30, 10)
    assert judge.enabled


def test_flat_judge_overrides_still_work_and_say_what_replaces_them(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="common.config"):
        config = resolve("smol", ["eval.judge_min_kappa=0.5", "eval.judge_jury_sources=[]"]).eval
    assert config.judge.min_kappa == 0.5 and config.judge.task == "ifeval"
    lines = [r.getMessage() for r in caplog.records]
    assert any("eval.judge_min_kappa is deprecated" in line and "use eval.judge.min_kappa"
               in line for line in lines), lines
    assert resolve("smol", ["eval.judge.min_kappa=0.4"]).eval.judge.min_kappa == 0.4


@pytest.mark.parametrize(("overrides", "code", "named"), [
    (["eval.judge_task=shipyard_exact"], "CONFIG_INVALID",  # smol sets judge.task
     "eval.judge_task and eval.judge.task are both given"),
    (["eval.judge.min_kappa=high"], "CONFIG_TYPE", "eval.judge.min_kappa='high'"),
    (["eval.judge.min_kapa=0.5"], "CONFIG_UNKNOWN_KEY", "config section 'eval.judge'"),
    (["eval.judge.task=shipyard_mc"], "CONFIG_INVALID",
     "eval.judge.task='shipyard_mc': must be one of ['shipyard_exact', 'shipyard_skill', "
     "'ifeval']"),
    (["eval.serving_engine=tgi"], "CONFIG_INVALID", "eval.serving_engine='tgi'"),
    (["eval.judge.min_kappa=2"], "EVAL_CONFIG_INVALID", "eval.judge.min_kappa=2"),
])
def test_bad_judge_settings_name_the_dotted_key(overrides: list[str], code: str,
                                                named: str) -> None:
    with pytest.raises(StageError) as info:
        resolve("smol", overrides)
    assert info.value.code == code and named in info.value.message, info.value.message


def test_a_config_built_in_code_checks_its_literals_too() -> None:
    with pytest.raises(EvalError) as info:
        JudgeConfig(task="shipyard_mc")  # type: ignore[arg-type]
    assert "eval.judge.task='shipyard_mc': must be one of" in info.value.message
    with pytest.raises(EvalError) as info:
        EvalConfig(model_path="openai")  # type: ignore[arg-type]
    assert "eval.model_path='openai'" in info.value.message


def test_the_report_config_is_nested_and_old_reports_still_read() -> None:
    config = dataclasses.asdict(EvalConfig(judge=JudgeConfig(non_inferiority_margin=0.1)))
    assert config["judge"]["non_inferiority_margin"] == 0.1
    assert not any(key.startswith("judge_") for key in config)
    assert judge_margin(config) == 0.1
    assert judge_margin({"judge_non_inferiority_margin": 0.2}) == 0.2  # written before
    assert judge_margin({}) is None
    report: dict[str, Any] = {
        "config": config, "judge": {"pairwise": {"win_rate": 0.6}},
        "gate": {"checks": [{"name": "judge_win_rate", "passed": True}]}}
    (claim,) = attestation_claims(report)["checks"]
    assert claim["threshold"] == pytest.approx(0.4)


def test_the_nested_config_round_trips_through_flyte() -> None:
    from flytekit.core.context_manager import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine

    import tasks.flyte_adapter  # noqa: F401  (installs the memo the workflow uses)

    config = resolve("smol", ["eval.judge.min_kappa=0.5"]).eval
    context = FlyteContextManager.current_context()
    literal = TypeEngine.to_literal(context, config, EvalConfig,
                                    TypeEngine.to_literal_type(EvalConfig))
    back = TypeEngine.to_python_value(context, literal, EvalConfig)
    assert back == config and isinstance(back.judge, JudgeConfig)
