"""Scripts for the scripted judge server: how a good, a biased and a broken judge answer."""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from eval.judge.llmbar import SUBSETS, load_subset
from eval.suite.build import DEFAULT_SOURCE, load_items
from testing.scripted_server import Reply, chat_reply, parse_judge_prompt

# Every held-out question's reference answer (covers the calibration pairs too).
REFERENCES = {item.prompt: item.response for item in load_items(DEFAULT_SOURCE)}


# Every human-labelled LLMBar pair: (instruction, output 1, output 2) -> preferred output.
HUMAN_PREFERRED = {(p.instruction, p.output_1, p.output_2): p.output_1 if p.label == "1"
                   else p.output_2 for s in SUBSETS for p in load_subset(s)}


def human_preferred(fields: dict[str, str]) -> str | None:
    """The output the LLMBar annotators preferred, when the prompt shows an LLMBar pair."""
    q, a, b = fields["question"], fields["a"], fields["b"]
    return HUMAN_PREFERRED.get((q, a, b)) or HUMAN_PREFERRED.get((q, b, a))


def reference_judge(path: str, request: dict[str, Any], call: int) -> Reply:
    """Prefers the answer equal to the reference (what the reference-labelled pairs encode),
    and on LLMBar pairs the output the human annotators preferred: a judge that earns its
    vote."""
    fields = parse_judge_prompt(request)
    if fields["kind"] == "single":
        return chat_reply("5" if fields["answer"] == fields["reference"] else "1")
    if (preferred := human_preferred(fields)) is not None:
        return chat_reply("A" if fields["a"] == preferred else "B")
    reference = reference_answer(fields["question"])
    a_right, b_right = fields["a"] == reference, fields["b"] == reference
    return chat_reply("A" if a_right and not b_right else "B" if b_right and not a_right
                      else "TIE")


def reference_answer(question: str) -> str:
    if question in REFERENCES:
        return REFERENCES[question]
    match = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", question)
    assert match, f"no reference for {question!r}"
    a, op, b = int(match[1]), match[2], int(match[3])
    return str(a + b if op == "+" else a - b if op == "-" else a * b)


def first_position_judge(path: str, request: dict[str, Any], call: int) -> Reply:
    """Always prefers whatever is shown first: pure position bias."""
    fields = parse_judge_prompt(request)
    return chat_reply("A" if fields["kind"] == "pairwise" else "3")


def chatty_judge(path: str, request: dict[str, Any], call: int) -> Reply:
    """Explains itself instead of answering in the required format."""
    return chat_reply("I think answer A is better.")


def logprob(p: float) -> float:
    return math.log(p)


def always_a_judge(path: str, request: dict[str, Any], call: int) -> Reply:
    """Answers "A" to every pairwise prompt, whatever the answers (and 3 to every grade)."""
    return chat_reply("A" if parse_judge_prompt(request)["kind"] == "pairwise" else "3")


def longer_answer_judge(path: str, request: dict[str, Any], call: int) -> Reply:
    """Prefers the longer answer (TIE on equal lengths): pure verbosity bias, consistent in
    both orders."""
    fields = parse_judge_prompt(request)
    if fields["kind"] == "single":
        return chat_reply("3")
    a, b = len(fields["a"]), len(fields["b"])
    return chat_reply("A" if a > b else "B" if b > a else "TIE")


def random_judge(path: str, request: dict[str, Any], call: int) -> Reply:
    """A, B or TIE drawn from the prompt's hash: random, yet the same answer to the same
    prompt (so a retried or cached call agrees)."""
    fields = parse_judge_prompt(request)
    digest = hashlib.sha256(request["messages"][0]["content"].encode()).digest()
    if fields["kind"] == "single":
        return chat_reply(str(1 + digest[0] % 5))
    return chat_reply(("A", "B", "TIE")[digest[0] % 3])
