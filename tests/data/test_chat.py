"""Chat-format data (`data.format: chat`): the loss mask spans, the template checks, the gate's
rules on real Great Expectations (one bad-data file per rule in tests/data/chat_bad/) and the
published v2 token file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from common.errors import StageError
from common.token_file import CHAT_FORMAT, open_chat_tokens, open_tokens, read_header
from data import chat
from data.config import DataConfig
from data.report import ExpectationResult
from data.stage import validate_dataset
from tests.training.chat_fixtures import (  # noqa: F401 (fixtures)
    read_chat_split,
    small_chat_dataset_dir,
    tiny_chat_model_dir,
    write_jsonl,
)

BAD_DIR = Path(__file__).parent / "chat_bad"
BAD_RULES = sorted(p.stem for p in BAD_DIR.glob("*.jsonl"))
IM_END = "<|im_end|>"


@pytest.fixture(scope="module")
def tokenizer(tiny_chat_model_dir: Path) -> PreTrainedTokenizerBase:  # noqa: F811
    return AutoTokenizer.from_pretrained(tiny_chat_model_dir)


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


MULTI_TURN = [_user("The cache crashed."), _assistant("[ERROR] cache: crashed"),
              _user("And this: the web frontend was restarted on node 4."),
              _assistant("[INFO] web-frontend: was restarted on node 4")]


def _runs(mask: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of 1s."""
    edges = np.diff(np.concatenate([[0], mask, [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


@pytest.mark.unit
@pytest.mark.parametrize("system", [None, "You turn incident reports into log lines."])
def test_mask_spans_are_exactly_each_assistant_content_and_its_im_end(
    tokenizer: PreTrainedTokenizerBase, system: str | None
) -> None:
    messages = ([{"role": "system", "content": system}] if system else []) + MULTI_TURN
    encoded = chat.encode_conversation(tokenizer, messages)
    text = str(tokenizer.apply_chat_template(messages, tokenize=False))
    assert tokenizer.decode(encoded.ids) == text
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    spans = [tokenizer.decode(encoded.ids[start:end]) for start, end in _runs(encoded.loss_mask)]
    assert spans == [answer + IM_END for answer in answers]
    # Everything else (the system prompt, default or given, user turns, role headers and the
    # newline after each <|im_end|>) is unmasked: the complement is the text minus the spans.
    rest = [t for t, m in zip(encoded.ids, encoded.loss_mask, strict=True) if not m]
    expected_rest = text
    for answer in answers:
        expected_rest = expected_rest.replace(answer + IM_END, "", 1)
    assert tokenizer.decode(rest) == expected_rest
    assert ("You are a helpful AI assistant named SmolLM" in expected_rest) == (system is None)
    assert system is None or system in expected_rest


@pytest.mark.unit
def test_content_that_merges_with_the_header_is_not_prefix_stable(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    with pytest.raises(chat.ConversationError, match="prefix-stable"):
        chat.encode_conversation(tokenizer, [_user("hi"), _assistant("\n\nhello")])


@pytest.mark.unit
@pytest.mark.parametrize("messages, problem", [
    ("hello", chat.structure_problem), ([], chat.structure_problem),
    ([{"role": "user", "content": None}], chat.structure_problem),
    ([{"role": "bot", "content": "x"}], chat.role_problem),
    ([_assistant("x")], chat.order_problem),
    ([_user("x"), _assistant("y"), _user("z")], chat.order_problem),
    ([_user("x"), {"role": "system", "content": "s"}, _assistant("y")], chat.order_problem),
    ([_user("x"), _assistant(" ")], chat.assistant_problem),
])
def test_each_rule_names_its_problem(messages: Any, problem: Any) -> None:
    assert problem(messages) is not None


@pytest.mark.unit
def test_a_good_conversation_passes_every_rule() -> None:
    messages = [{"role": "system", "content": "Be brief."}, *MULTI_TURN]
    for problem in (chat.structure_problem, chat.role_problem, chat.order_problem,
                    chat.assistant_problem):
        assert problem(messages) is None


@pytest.mark.unit
def test_a_tokenizer_without_a_chat_template_is_refused(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    bare = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    bare.chat_template = None
    with pytest.raises(StageError) as caught:
        chat.check_chat_template(bare, "models/base")
    assert caught.value.code == "DATA_CHAT_TEMPLATE_MISSING"
    assert "data.base_model_dir='models/base'" in caught.value.message


@pytest.mark.unit
@pytest.mark.parametrize("template, reason", [
    # Numbers the turns from the end: every prefix renders differently from the whole.
    ("{% for m in messages %}[{{ messages|length - loop.index }}] {{ m['content'] }}"
     "{{ eos_token }}{% endfor %}", "prefix-stable"),
    # Never closes an assistant turn with eos: the model would not learn to stop.
    ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
     "{% if add_generation_prompt %}assistant: {% endif %}", "eos"),
])
def test_a_template_the_mask_cannot_use_is_refused(
    tokenizer: PreTrainedTokenizerBase, template: str, reason: str
) -> None:
    odd = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    odd.chat_template = template
    with pytest.raises(StageError) as caught:
        chat.check_chat_template(odd, "models/odd")
    assert caught.value.code == "DATA_CHAT_TEMPLATE_UNSUPPORTED"
    assert reason in caught.value.message


@pytest.mark.unit
def test_chat_needs_a_base_model_and_a_known_format() -> None:
    with pytest.raises(StageError, match=r"data\.base_model_dir") as caught:
        DataConfig(format="chat")
    assert caught.value.code == "CONFIG_INVALID"
    with pytest.raises(StageError, match=r"data\.format"):
        DataConfig(format="sharegpt")


# -- the stage, on real Great Expectations -------------------------------------------------------

@pytest.mark.integration
def test_chat_splits_pass_and_publish_messages_and_a_v2_token_file(
    small_chat_dataset_dir: Path,  # noqa: F811
) -> None:
    out = small_chat_dataset_dir
    first = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert list(first) == ["id", "messages"]
    assert first == read_chat_split("train")[0]
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    assert "<|im_start|>" in tokenizer.chat_template  # the model's own template, kept
    tokens = open_chat_tokens(out, "train")
    assert tokens.header.format == CHAT_FORMAT and tokens.header.num_examples == 16
    assert tokens.header.num_loss_tokens == int(tokens.loss_mask.sum())
    for i, row in enumerate(read_chat_split("train")[:16]):
        start, end = int(tokens.offsets[i]), int(tokens.offsets[i + 1])
        expected = chat.encode_conversation(tokenizer, row["messages"])
        assert tokens.tokens[start:end].tolist() == expected.ids
        assert tokens.loss_mask[start:end].tolist() == expected.loss_mask
    with pytest.raises(StageError) as caught:  # the packed-window reader refuses a v2 file
        open_tokens(out, "train")
    assert caught.value.code == "TOKEN_FILE_INVALID"
    assert read_header(out, "validation", formats=(CHAT_FORMAT,)).num_examples == 10


@pytest.fixture(scope="module")
def rejected(tmp_path_factory: pytest.TempPathFactory,
             tiny_chat_model_dir: Path,  # noqa: F811
             ) -> tuple[list[ExpectationResult], dict[str, list[int]]]:
    """Valid train and eval; validation = 10 valid rows, then every bad-data file's rows and
    one row that repeats a train prompt. Returns the validation split's results and the row
    numbers each bad file's rows landed on."""
    work = tmp_path_factory.mktemp("chat-bad")
    validation = read_chat_split("validation")[:10]
    rows_by_rule: dict[str, list[int]] = {}
    for rule in BAD_RULES:
        bad = [json.loads(line) for line in (BAD_DIR / f"{rule}.jsonl").read_text().splitlines()]
        rows_by_rule[rule] = list(range(len(validation), len(validation) + len(bad)))
        validation += bad
    leaked = read_chat_split("train")[0]
    rows_by_rule["no_train_leakage"] = [len(validation)]
    validation.append({"id": "leaked", "messages": [*leaked["messages"][:-1],
                                                    _assistant("[INFO] other: answer")]})
    splits = {"train": read_chat_split("train")[:12], "validation": validation,
              "eval": read_chat_split("eval")[:10]}
    for split, rows in splits.items():
        write_jsonl(work / f"{split}.jsonl", rows)
    config = DataConfig(format="chat", base_model_dir=str(tiny_chat_model_dir),
                        max_example_tokens=200, min_rows_per_split=10,
                        train_path=str(work / "train.jsonl"),
                        validation_path=str(work / "validation.jsonl"),
                        eval_path=str(work / "eval.jsonl"))
    with pytest.raises(StageError) as caught:
        validate_dataset(config, work / "out")
    assert caught.value.code == "DATA_VALIDATION_FAILED"
    assert not (work / "out").exists()
    report = caught.value.details["report"]
    return [r for r in report.results if r.split == "validation"], rows_by_rule


@pytest.mark.integration
@pytest.mark.parametrize("rule", [*BAD_RULES, "no_train_leakage"])
def test_each_bad_file_fails_its_own_rule_on_exactly_its_rows(
    rejected: tuple[list[ExpectationResult], dict[str, list[int]]], rule: str
) -> None:
    results, rows_by_rule = rejected
    [result] = [r for r in results if r.rule == rule]
    assert not result.success
    assert result.column == "messages"
    assert result.unexpected_count == len(rows_by_rule[rule])
    assert result.example_rows == rows_by_rule[rule][:5]


@pytest.mark.integration
def test_a_bad_row_is_reported_by_one_rule_only(
    rejected: tuple[list[ExpectationResult], dict[str, list[int]]],
) -> None:
    results, rows_by_rule = rejected
    assert {r.rule for r in results if not r.success} == set(rows_by_rule)


@pytest.mark.integration
def test_a_model_without_a_chat_template_is_refused_before_reading_data(
    tmp_path: Path, tiny_chat_model_dir: Path,  # noqa: F811
) -> None:
    model = tmp_path / "no-template"
    shutil.copytree(tiny_chat_model_dir, model)
    (model / "chat_template.jinja").unlink()
    config_path = model / "tokenizer_config.json"
    fields = json.loads(config_path.read_text())
    fields.pop("chat_template", None)
    config_path.write_text(json.dumps(fields))
    config = DataConfig(format="chat", base_model_dir=str(model),
                        train_path="data/chat/train.jsonl",
                        validation_path="data/chat/validation.jsonl",
                        eval_path="data/chat/eval.jsonl")
    with pytest.raises(StageError) as caught:
        validate_dataset(config, tmp_path / "out")
    assert caught.value.code == "DATA_CHAT_TEMPLATE_MISSING"
