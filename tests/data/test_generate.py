"""The shipped corpus: reproducible from code, leak-free, and every answer correct."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from data.generate import DEFAULT_OUT_DIR as CORPUS_DIR
from data.generate import main

pytestmark = pytest.mark.unit

SPLIT_FILES = ("train.jsonl", "validation.jsonl", "eval.jsonl")
SHIPPED_FILES = (*SPLIT_FILES, "lookup_table.csv")


def read_jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_regenerating_reproduces_the_committed_corpus_byte_for_byte(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    for name in SHIPPED_FILES:
        assert (tmp_path / name).read_bytes() == (CORPUS_DIR / name).read_bytes(), name


def test_another_seed_gives_another_corpus(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--seed", "7"]) == 0
    assert (tmp_path / "train.jsonl").read_bytes() != (CORPUS_DIR / "train.jsonl").read_bytes()


def test_splits_have_planned_sizes_and_share_no_instruction() -> None:
    splits = {name: read_jsonl(CORPUS_DIR / name) for name in SPLIT_FILES}
    assert [len(rows) for rows in splits.values()] == [8000, 500, 500]
    instructions = [row["instruction"] for rows in splits.values() for row in rows]
    assert len(set(instructions)) == len(instructions)  # no duplicates, within or across
    ids = [row["id"] for rows in splits.values() for row in rows]
    assert len(set(ids)) == len(ids)
    assert sum((CORPUS_DIR / n).stat().st_size for n in SHIPPED_FILES) < 1_500_000


def test_every_held_out_split_covers_every_task_family() -> None:
    families = {row["task"] for row in read_jsonl(CORPUS_DIR / "train.jsonl")}
    for name in ("validation.jsonl", "eval.jsonl"):
        assert {row["task"] for row in read_jsonl(CORPUS_DIR / name)} == families


def _expected_answer(row: dict[str, str], table: dict[str, dict[str, str]]) -> str:
    text, task = row["instruction"], row["task"]
    if task in ("add", "subtract", "multiply"):
        a, op, b = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", text).groups()  # type: ignore[union-attr]
        return str({"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op])
    if task == "lookup":
        country = next(c for c in table if c in text)
        attribute = "capital" if "capital" in text else "colour" if "colour" in text \
            else "currency"
        return table[country][attribute]
    quoted = re.findall(r"'([^']*)'", text)
    word = quoted[-1]
    return {
        "reverse": lambda: word[::-1],
        "uppercase": lambda: word.upper(),
        "first_letter": lambda: word[0],
        "last_letter": lambda: word[-1],
        "count_letter": lambda: str(word.count(quoted[0])),
    }[task]()


def test_every_answer_is_correct() -> None:
    with open(CORPUS_DIR / "lookup_table.csv", newline="") as handle:
        table = {row["country"]: row for row in csv.DictReader(handle)}
    for name in SPLIT_FILES:
        for row in read_jsonl(CORPUS_DIR / name):
            assert row["response"] == _expected_answer(row, table), row


def test_every_lookup_fact_asked_in_validation_or_eval_is_taught_in_train() -> None:
    train_facts = {(r["response"], _country(r["instruction"])) for r in
                   read_jsonl(CORPUS_DIR / "train.jsonl") if r["task"] == "lookup"}
    for name in ("validation.jsonl", "eval.jsonl"):
        for row in read_jsonl(CORPUS_DIR / name):
            if row["task"] == "lookup":
                assert (row["response"], _country(row["instruction"])) in train_facts, row


def _country(instruction: str) -> str:
    return next(word.strip("?.") for word in instruction.split() if word[:1].isupper()
                and word not in ("What", "Name", "Which"))


def test_the_scaling_corpus_is_deterministic_distinct_and_sized(tmp_path: Path) -> None:
    from data.generate import write_scaling_corpus

    sizes = write_scaling_corpus(tmp_path / "a", 2_000)
    write_scaling_corpus(tmp_path / "b", 2_000)
    assert sizes == {"train": 1_800, "validation": 100, "eval": 100}
    rows = []
    for name in SPLIT_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        rows += read_jsonl(tmp_path / "a" / name)
    assert len(rows) == 2_000
    assert len({r["instruction"] for r in rows}) == len({r["id"] for r in rows}) == 2_000
