"""Where judges come from (a server, a model directory, a provisioned base-model source, a jury
of them) and which task's answers they compare."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from eval.config import EvalConfig, GateConfig, JudgeConfig
from eval.engines import judge_endpoints
from eval.errors import EvalError
from eval.harness import SampleResult, doc_hash
from eval.judge.client import JudgeEndpoint
from eval.judge.run import judged_question, run_judge
from testing.scripted_server import ScriptedServer
from testing.tiny_model import build_tiny_model
from tests.deploy.http import request
from tests.eval.test_judge_length_control import calibrated_but_verbose_judge

SMOL = "package:smollm2-135m-instruct"
# Calibration on a slice of LLMBar: these tests are about the wiring, not the judge.
SLICE: dict[str, Any] = {"calibration_subsets": ["natural"], "calibration_limit_per_subset": 8}


@pytest.mark.unit
@pytest.mark.parametrize(("settings", "named"), [
    ({"source": "hub:HuggingFaceTB/SmolLM2"}, "eval.judge.source='hub:"),
    ({"source": SMOL, "jury_sources": ["dir:/m", "smollm"]},
     "eval.judge.jury_sources[1]='smollm'"),
    ({"source": SMOL, "base_url": "http://judge:8000"}, "set at most one"),
    ({"model_dir": "/m", "source": SMOL}, "set at most one"),
    ({"jury_sources": [SMOL]}, "a jury needs a first judge"),
    ({"source": SMOL, "jury_base_urls": ["judge:8000"]}, "not an http(s) URL"),
    ({"task": "shipyard_mc"}, "eval.judge.task='shipyard_mc': must be one of "
                              "['shipyard_exact', 'shipyard_skill', 'ifeval']"),
    ({"source": SMOL, "task": "ifeval"}, "must include 'ifeval' (eval.judge.task)"),
])
def test_judge_settings_are_checked_and_the_error_names_the_setting(
        settings: dict[str, Any], named: str) -> None:
    with pytest.raises(EvalError) as info:
        EvalConfig(judge=JudgeConfig(**settings))
    assert info.value.code == "EVAL_CONFIG_INVALID" and named in info.value.message


@pytest.mark.unit
def test_a_packaged_judge_and_another_task_are_accepted() -> None:
    config = EvalConfig(judge=JudgeConfig(source=SMOL, task="ifeval"),
                        tasks=["shipyard_scoring_check", "ifeval"],
                        gate=GateConfig(non_inferiority_margins={}))
    assert config.judge.enabled and config.judge.task == "ifeval"
    assert not EvalConfig().judge.enabled


def _sample(doc: dict[str, Any], output: str, task: str = "ifeval") -> SampleResult:
    return SampleResult(task, 0, doc_hash(doc), {}, output, doc)


@pytest.mark.unit
def test_the_judge_sees_the_question_as_a_person_would() -> None:
    assert judged_question(_sample({"prompt": "Write a haiku."}, "")) == "Write a haiku."
    lone = {"messages": [{"role": "user", "content": "disk full on db-1"}], "answer": "x"}
    assert judged_question(_sample(lone, "")) == "disk full on db-1"
    with_system = {"messages": [{"role": "system", "content": "Reply as a log line."},
                                {"role": "user", "content": "disk full on db-1"}]}
    assert judged_question(_sample(with_system, "")) == (
        "System: Reply as a log line.\n\nUser: disk full on db-1")


@pytest.mark.unit
def test_a_task_without_references_is_judged_pairwise_only(tmp_path: Path) -> None:
    """IFEval has no reference answers: no rubric grades, and the pairwise comparison with
    its length control still runs (a verbose-loving judge: raw win rate 1, LC near 0.5)."""
    docs: list[dict[str, Any]] = [{"key": i, "prompt": f"Describe item {i} in one sentence."}
                                  for i in range(30)]
    candidate = [_sample(d, f"Item {d['key']} is a thing." + " Really." * (1 + d["key"] % 7))
                 for d in docs]
    champion = [_sample(d, f"Item {d['key']} is a thing.") for d in docs]
    config = EvalConfig(judge=JudgeConfig(**SLICE, base_url="scripted", task="ifeval",
                                          max_items=30),
                        gate=GateConfig(bootstrap_resamples=200, non_inferiority_margins={}),
                        tasks=["shipyard_scoring_check", "ifeval"])
    with ScriptedServer(calibrated_but_verbose_judge) as server:
        report = run_judge(config, JudgeEndpoint(server.base_url, "scripted"), candidate,
                           champion, tmp_path)
    assert report.task == "ifeval" and report.judge_kind == "judge"
    assert report.rubric_candidate is None and report.rubric_champion is None
    assert report.pairwise is not None and report.pairwise.num_valid_pairs == 30
    assert report.pairwise.win_rate == 1.0  # the longer answer always wins
    assert report.length_control is not None
    assert report.length_control.lc_win_rate < 0.75  # the length covariate takes it back
    assert report.lengths["longer_answer_win_rate"] == 1.0


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_judges_from_sources_are_served_and_a_jury_needs_different_weights(
        tmp_path: Path) -> None:
    """`dir:` sources go through the base-model provisioning and are served by the stage's
    engine: two different models make a jury; the same weights twice are one judge."""
    one, two = (build_tiny_model(tmp_path / name, seed=seed)
                for seed, name in ((0, "one"), (1, "two")))
    # the same weights under two sources: two engines, one identity
    config = EvalConfig(judge=JudgeConfig(source=f"dir:{one}",
                                          jury_sources=[f"dir:{two}", f"dir:{one}"]),
                        serving_engine="local")
    with ExitStack() as engines:
        judges = judge_endpoints(config, engines, None, tmp_path / "models")
        assert [j.model for j in judges] == ["judge"] * 3
        assert judges[0].model_digest != judges[1].model_digest
        assert judges[0].identity == judges[2].identity
        for judge in judges[:2]:  # the engines serve and answer a chat request
            reply = request(f"{judge.base_url}/v1/chat/completions", {
                "model": judge.model, "max_tokens": 2, "temperature": 0,
                "messages": [{"role": "user", "content": "A or B?"}]})
            assert reply.status == 200, reply.body
        assert len({j.base_url for j in judges}) == 3
        with pytest.raises(EvalError) as info:
            run_judge(EvalConfig(judge=JudgeConfig(**SLICE),
                                 gate=GateConfig(bootstrap_resamples=200)), judges[0],
                      [], None, None,
                      jury_endpoints=judges[2:])
    assert info.value.code == "EVAL_JUDGE_JURY_INVALID"
