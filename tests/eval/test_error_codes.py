"""Eval error codes no other test raised, each through the function that raises it: config
rules, the task suite, judge prompts, an unreachable judge, a model directory the harness
cannot use, an eval split that is not the validated one, and a champion lookup MLflow
refuses (against a real sqlite MLflow store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.settings import load_settings
from eval.config import EvalConfig, GateConfig, JudgeConfig
from eval.errors import EvalError
from eval.harness import HarnessOptions, ModelSource, run_harness
from eval.judge.client import first_served_model
from eval.judge.prompts import PROMPTS_DIR, load_prompt
from eval.stage import bos_token
from eval.suite.specs import prepare_suite
from serving.process import free_port

# ---- config --------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model_path": "openai"}, "model_path"),
        ({"serving_engine": "tgi"}, "serving_engine"),
        ({"tasks": ["shipyard_mc"]}, "tasks"),  # without the scoring check
        ({"tasks": ["shipyard_scoring_check", "nope"]}, "tasks"),
        ({"judge": {"base_url": "http://127.0.0.1:1"},
          "tasks": ["shipyard_scoring_check"]}, "tasks"),  # a judge needs shipyard_exact
        # bits per byte: a ceiling
        ({"gate": {"hard_floors": {"shipyard_ppl": 1.0}}}, "eval.gate.hard_floors"),
        ({"gate": {"non_inferiority_margins": {"shipyard_mc": -0.1}}},
         "eval.gate.non_inferiority_margins"),
        ({"gate": {"confidence": 1.0}}, "eval.gate.confidence"),
        ({"gate": {"min_paired_items": 0}}, "eval.gate.min_paired_items"),
        ({"limit_per_task": 0}, "limit_per_task"),
        ({"ifeval_limit": 0}, "ifeval_limit"),
        ({"ifeval_max_gen_tokens": 0}, "ifeval_max_gen_tokens"),
        ({"gate": {"must_improve": ["ifeval"]}}, "eval.gate.must_improve"),  # not run
        ({"judge": {"max_retries": -1}}, "eval.judge.max_retries"),
    ],
)
def test_config_rules(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(EvalError) as info:  # the sections are built inside: they may fail
        EvalConfig(**(overrides | {"judge": JudgeConfig(**overrides.get("judge", {})),
                                   "gate": GateConfig(**overrides.get("gate", {}))}))
    assert info.value.code == "EVAL_CONFIG_INVALID"
    assert field in info.value.message


@pytest.mark.unit
def test_config_rule_through_resolve() -> None:
    from tasks.resolve import resolve

    with pytest.raises(EvalError) as info:
        resolve("tiny", ["eval.gate.power=0.2"])
    assert info.value.code == "EVAL_CONFIG_INVALID"


# ---- suite and judge prompts -----------------------------------------------------------------


@pytest.mark.unit
def test_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(EvalError) as info:
        prepare_suite(tmp_path, ["shipyard_scoring_check", "shipyard_trivia"], bos_token="<s>",
                      max_gen_tokens=4)
    assert info.value.code == "EVAL_UNKNOWN_TASK"
    assert "shipyard_trivia" in info.value.message


@pytest.mark.unit
@pytest.mark.parametrize(("kind", "version"), [("pairwise", "v999"), ("rubric", "v1")])
def test_judge_prompt_missing(kind: str, version: str) -> None:
    with pytest.raises(EvalError) as info:
        load_prompt(kind, version)
    assert info.value.code == "EVAL_JUDGE_PROMPT_MISSING"


@pytest.mark.unit
def test_judge_prompt_header_must_match_its_file_name(tmp_path: Path) -> None:
    # A prompt edited without bumping its version would silently reuse cached verdicts.
    text = (PROMPTS_DIR / "pairwise_v1.txt").read_text()
    (tmp_path / "pairwise_v2.txt").write_text(text)  # still says VERSION: pairwise_v1
    with pytest.raises(EvalError) as info:
        load_prompt("pairwise", "v2", prompts_dir=tmp_path)
    assert info.value.code == "EVAL_JUDGE_PROMPT_INVALID"


@pytest.mark.unit
def test_judge_prompt_needs_every_field() -> None:
    prompt = load_prompt("single", "v1")
    with pytest.raises(EvalError) as info:
        prompt.render()
    assert info.value.code == "EVAL_JUDGE_PROMPT_INVALID"


@pytest.mark.unit
def test_judge_unreachable() -> None:
    with pytest.raises(EvalError) as info:
        first_served_model(f"http://127.0.0.1:{free_port()}/v1", timeout_seconds=5)
    assert info.value.code == "EVAL_JUDGE_UNREACHABLE"
    assert "eval.judge.model" in info.value.message


# ---- the model -------------------------------------------------------------------------------


@pytest.mark.unit
def test_model_dir_without_a_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(EvalError) as info:
        bos_token(tmp_path)
    assert info.value.code == "EVAL_MODEL_INVALID"


@pytest.mark.integration
def test_harness_refuses_bad_sources_before_loading_anything(tmp_path: Path) -> None:
    suite = prepare_suite(tmp_path / "suite", ["shipyard_scoring_check"], bos_token="<s>",
                          max_gen_tokens=4)
    options = HarnessOptions(limit_per_task=1)
    with pytest.raises(EvalError) as unknown_path:
        run_harness(ModelSource(tmp_path, "ab" * 32, path="openai"), suite, options)
    assert unknown_path.value.code == "EVAL_CONFIG_INVALID"
    with pytest.raises(EvalError) as no_config:
        run_harness(ModelSource(tmp_path, "ab" * 32, path="hf"), suite, options)
    assert no_config.value.code == "EVAL_MODEL_INVALID"
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 64}')
    with pytest.raises(EvalError) as no_url:
        run_harness(ModelSource(tmp_path, "ab" * 32, path="local-completions"), suite, options)
    assert no_url.value.code == "EVAL_CONFIG_INVALID"
    assert "base URL" in no_url.value.message


# ---- the evaluate stage's refusals -----------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("recorded", ["0" * 64, None])
def test_eval_split_that_is_not_the_validated_one(tmp_path: Path, recorded: str | None) -> None:
    from eval.run import evaluate_model

    split = tmp_path / "eval.jsonl"
    split.write_text('{"id": "e-0", "prompt": "q", "response": "a"}\n')
    with pytest.raises(EvalError) as info:
        evaluate_model(model_dir=tmp_path / "model", model_digest="ab" * 32,
                       training_run_id="run", eval_split=split, eval_split_digest=recorded,
                       config=EvalConfig(), settings=load_settings(), work_dir=tmp_path / "w")
    assert info.value.code == "EVAL_DATASET_DIGEST_MISMATCH"
    assert not (tmp_path / "w").exists()  # refused before any work


@pytest.mark.integration
def test_champion_lookup_mlflow_refuses(tmp_path: Path) -> None:
    from eval.champion import load_champion

    config = EvalConfig(registered_model_name="team/shipyard")  # MLflow forbids '/' in names
    with pytest.raises(EvalError) as info:
        load_champion(config, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "keys",
                      tmp_path / "champion")
    assert info.value.code == "EVAL_CHAMPION_LOOKUP_FAILED"
    assert "team/shipyard" in info.value.message


@pytest.mark.unit
def test_candidate_whose_files_are_not_the_trained_model(tmp_path: Path) -> None:
    """Evaluate scores only the bytes it names: a model edited after training is refused
    before anything is measured."""
    from common.digests import model_root_digest, sha256_file
    from eval.run import evaluate_model

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"max_position_embeddings": 64}')
    trained_digest = model_root_digest(model)
    (model / "config.json").write_text('{"max_position_embeddings": 65}')  # tampered
    split = tmp_path / "eval.jsonl"
    split.write_text('{"id": "e-0", "prompt": "q", "response": "a"}\n')
    with pytest.raises(EvalError) as info:
        evaluate_model(model_dir=model, model_digest=trained_digest, training_run_id="run",
                       eval_split=split, eval_split_digest=sha256_file(split),
                       config=EvalConfig(), settings=load_settings(), work_dir=tmp_path / "w")
    assert info.value.code == "EVAL_MODEL_DIGEST_MISMATCH"
    assert trained_digest in info.value.message
    assert not (tmp_path / "w").exists()
