"""A chat model's suite: shipyard_skill from a chat eval split, IFEval, and every generation
prompt through the model's chat template (lm-eval's apply_chat_template); a model without one
keeps the text prompts. The model is the tiny SmolLM2-shaped model with the real template."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from eval.config import EvalConfig, GateConfig
from eval.errors import EvalError
from eval.harness import HarnessOptions, ModelSource, run_harness
from eval.stage import prompt_format, run_eval
from eval.suite.chat_rows import load_chat_items, skill_rows
from eval.suite.ifeval import ifeval_data_path
from eval.suite.specs import prepare_suite
from testing.tiny_chat_model import build_tiny_chat_model

CHAT_SPLIT = Path(__file__).parent / "data" / "chat_eval.jsonl"
CHAT_TASKS = ["shipyard_scoring_check", "ifeval", "shipyard_skill"]


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat") / "model")


# ---- data and rendering (no model) ---------------------------------------------------------


@pytest.mark.unit
def test_skill_rows_prompt_with_all_but_the_final_assistant_turn() -> None:
    rows = skill_rows(load_chat_items(CHAT_SPLIT))
    assert [r["id"] for r in rows] == ["skill-0", "skill-1", "skill-2", "skill-3"]
    assert rows[0]["messages"] == [{"role": "user", "content": "Reply with the word yes."}]
    assert rows[2]["answer"] == "tac" and rows[3]["answer"] == "Green."  # stripped
    multi_turn = rows[3]["messages"]
    assert [m["role"] for m in multi_turn] == ["system", "user", "assistant", "user"]
    assert rows[3]["context"] == "### Instruction:\nAnd of grass?\n### Response:\n"


@pytest.mark.unit
def test_chat_split_renders_skill_and_ifeval_with_their_caps(tmp_path: Path) -> None:
    suite = prepare_suite(tmp_path, CHAT_TASKS, bos_token="", max_gen_tokens=8,
                          eval_split=CHAT_SPLIT, ifeval_max_gen_tokens=128,
                          skill_max_gen_tokens=32)
    assert suite.max_gen_tokens == {"ifeval": 128, "shipyard_skill": 32}
    assert suite.data_files["ifeval"] == ifeval_data_path()
    assert suite.data_files["shipyard_scoring_check"].parent.name == "data"  # shipped data
    assert suite.chat_source_sha256 is not None and suite.shipped
    for task in CHAT_TASKS:
        text = (suite.include_dir / f"{task}.yaml").read_text()
        config = yaml.safe_load(text.replace("!function ", ""))
        data_file = Path(config["dataset_kwargs"]["data_files"]["test"])
        assert data_file.is_absolute() and suite.data_digests[task] == hashlib.sha256(
            data_file.read_bytes()).hexdigest()
        assert suite.versions[task] == "1.0"
    ifeval = yaml.safe_load((suite.include_dir / "ifeval.yaml").read_text()
                            .replace("!function ", ""))
    assert ifeval["generation_kwargs"]["max_gen_toks"] == 128
    assert ifeval["process_results"] == "ifeval_functions.process_results"
    # lm-eval imports these from beside the YAML; they forward to eval/.
    assert "eval.suite.ifeval" in (suite.include_dir / "ifeval_functions.py").read_text()
    assert "ChatPromptTask" in (suite.include_dir / "chat_task.py").read_text()
    again = prepare_suite(tmp_path / "again", ["shipyard_scoring_check", "shipyard_skill"],
                          bos_token="", max_gen_tokens=8, eval_split=CHAT_SPLIT)
    assert again.data_digests["shipyard_skill"] == suite.data_digests["shipyard_skill"]


@pytest.mark.unit
def test_skill_task_needs_a_chat_split(tmp_path: Path) -> None:
    text_split = tmp_path / "eval.jsonl"
    text_split.write_text(json.dumps({"id": "add-1", "prompt": "1+1?", "response": "2"}) + "\n")
    for split in (None, text_split):
        with pytest.raises(EvalError) as info:
            prepare_suite(tmp_path / "suite", ["shipyard_scoring_check", "shipyard_skill"],
                          bos_token="", max_gen_tokens=8, eval_split=split)
        assert info.value.code == "EVAL_SKILL_DATA_MISSING"
        assert "data.format: chat" in info.value.message


@pytest.mark.unit
def test_a_conversation_without_a_final_answer_is_refused(tmp_path: Path) -> None:
    split = tmp_path / "eval.jsonl"
    split.write_text(json.dumps({"id": "c0", "messages": [
        {"role": "assistant", "content": "hi"}, {"role": "user", "content": "bye"}]}) + "\n")
    with pytest.raises(EvalError) as info:
        prepare_suite(tmp_path / "suite", ["shipyard_scoring_check", "shipyard_skill"],
                      bos_token="", max_gen_tokens=8, eval_split=split)
    assert info.value.code == "EVAL_SKILL_DATA_INVALID" and "eval.jsonl:1" in info.value.message


@pytest.mark.integration
def test_prompt_format_follows_the_tokenizers_chat_template(chat_model: Path,
                                                            tmp_path: Path) -> None:
    assert prompt_format(chat_model).chat_template
    assert not prompt_format(chat_model, use_chat_template=False).chat_template
    plain = tmp_path / "plain"
    shutil.copytree(chat_model, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    fmt = prompt_format(plain)
    assert not fmt.chat_template and fmt.bos_token == "<|im_start|>"
    with pytest.raises(EvalError) as info:
        prompt_format(plain, use_chat_template=True)
    assert info.value.code == "EVAL_MODEL_INVALID"


# ---- the tiny chat model through lm-eval ---------------------------------------------------


@pytest.mark.integration
def test_chat_model_run_eval_prompts_through_the_template_and_pairs_by_document(
        chat_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    config = EvalConfig(tasks=CHAT_TASKS, limit_per_task=4, ifeval_limit=2,
                        ifeval_max_gen_tokens=12, skill_max_gen_tokens=6,
                        gate=GateConfig(non_inferiority_margins={"ifeval": 0.05},
                                        must_improve=["shipyard_skill"], min_paired_items=2,
                                        bootstrap_resamples=200),
                        registered_model_name=None)
    model = ModelSource(chat_model, "a" * 64)
    # The champion is the same model under the same digest: its pass is answered from the
    # response cache, and the skill cannot have improved.
    outcome = run_eval(config, model, work_dir=tmp_path / "work", champion=model,
                       eval_split=CHAT_SPLIT, cache_dir=tmp_path / "cache")
    candidate = outcome.candidate
    assert candidate.num_samples == {"shipyard_scoring_check": 4, "ifeval": 2,
                                     "shipyard_skill": 4}
    assert candidate.metrics["shipyard_scoring_check"]["acc"] == 1.0
    assert {"prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc",
            "inst_level_loose_acc"} <= set(candidate.metrics["ifeval"])
    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    for sample in candidate.samples["ifeval"]:
        assert sample.prompt == tokenizer.apply_chat_template(
            [{"role": "user", "content": sample.doc["prompt"]}], tokenize=False,
            add_generation_prompt=True)
        assert sample.output is not None and sample.metrics["num_instructions"] >= 1
    multi_turn = next(s for s in candidate.samples["shipyard_skill"]
                      if s.doc["id"] == "skill-3")
    assert multi_turn.prompt == tokenizer.apply_chat_template(
        multi_turn.doc["messages"], tokenize=False, add_generation_prompt=True)
    assert multi_turn.prompt is not None and multi_turn.prompt.startswith(
        "<|im_start|>system\nAnswer in one word.<|im_end|>")

    report = outcome.report
    assert report["prompting"]["candidate"]["chat_template_applied"] is True
    assert report["suite"]["max_gen_tokens"] == {"ifeval": 12, "shipyard_skill": 6}
    assert report["suite"]["task_limits"] == {"ifeval": 2}
    checks = {c.name: c for c in outcome.decision.checks}
    assert checks["non_inferiority:ifeval"].passed  # identical answers, paired by document
    assert not checks["improvement:shipyard_skill"].passed
    assert outcome.decision.outcome == "FAIL"
    skill = next(c for c in outcome.decision.comparisons if c.task == "shipyard_skill")
    assert skill.num_pairs == 4 and skill.improvement == 0


@pytest.mark.integration
def test_without_the_chat_template_prompts_stay_text(chat_model: Path, tmp_path: Path) -> None:
    fmt = prompt_format(chat_model, use_chat_template=False)
    suite = prepare_suite(tmp_path, CHAT_TASKS, bos_token=fmt.bos_token, max_gen_tokens=8,
                          eval_split=CHAT_SPLIT, ifeval_max_gen_tokens=4,
                          skill_max_gen_tokens=4)
    result = run_harness(ModelSource(chat_model, "b" * 64), suite,
                         HarnessOptions(limit_per_task=2))
    assert result.config["chat_template_applied"] is False
    (first, _) = result.samples["ifeval"]
    assert first.prompt == "<|im_start|>" + first.doc["prompt"]
    skill = result.samples["shipyard_skill"][0]
    assert skill.prompt == "<|im_start|>### Instruction:\nReply with the word yes.\n### Response:\n"
