"""Scripts for the scripted judge server: how a good, a biased and a broken judge answer."""

from __future__ import annotations

import math
import re
from typing import Any

from eval.suite.build import DEFAULT_SOURCE, load_items
from testing.scripted_server import Reply, chat_reply, parse_judge_prompt

# Every held-out question's reference answer (covers the calibration pairs too).
REFERENCES = {item.prompt: item.response for item in load_items(DEFAULT_SOURCE)}


def reference_judge(path: str, request: dict[str, Any], call: int) -> Reply:
    """Prefers the answer equal to the reference: what the calibration labels encode."""
    fields = parse_judge_prompt(request)
    if fields["kind"] == "single":
        return chat_reply("5" if fields["answer"] == fields["reference"] else "1")
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
