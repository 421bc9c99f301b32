"""Generate the shipped instruction/response corpus (``python -m data.generate``).

Every answer is checkable by code: arithmetic on small integers, string transforms of
invented words, and look-ups in a fictional table written next to the corpus
(``lookup_table.csv``). Nothing is copied from anywhere, so the corpus is licence-clean.

The output is a pure function of the seed: one `random.Random(seed)` drives every choice, rows
are written with a fixed key order, ``ensure_ascii=False`` and ``\\n`` line endings, so a re-run
is byte-identical to the committed files.

No instruction appears twice, neither within a split nor across splits. Look-up facts are the
exception by design: each fact is asked in several phrasings, and one phrasing of every fact is
pinned to train, so validation/eval ask about facts the model has seen, in words it has not.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from common.fs import SHARED_FILE_MODE, atomic_write_text
from common.settings import PROJECT_ROOT

DEFAULT_OUT_DIR = PROJECT_ROOT / "data" / "corpus"
DEFAULT_SEED = 1729
LOOKUP_TABLE_NAME = "lookup_table.csv"
SPLIT_NAMES = ("train", "validation", "eval")

# Rows per task family. Each is a multiple of 18 so that validation and eval each take exactly
# 1/18 of every family (500 rows each out of 9000) and the splits share one task mix.
ROWS_PER_TASK = {
    "add": 1800,
    "subtract": 1440,
    "multiply": 900,
    "reverse": 900,
    "uppercase": 900,
    "count_letter": 900,
    "first_letter": 540,
    "last_letter": 540,
    "lookup": 1080,
}
HELD_OUT_FRACTION_DENOMINATOR = 18  # validation and eval each get rows // 18 of a family

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_COLOURS = (
    "amber", "azure", "coral", "crimson", "emerald", "indigo",
    "ivory", "jade", "lilac", "ochre", "scarlet", "teal",
)
_COUNTRY_SUFFIXES = ("via", "dor", "mere", "holm", "ria", "land")
_CAPITAL_SUFFIXES = ("", "burg", "ton", "port")
NUM_COUNTRIES = 90
LOOKUP_QUESTIONS = {  # 3 attributes x 4 phrasings x 90 countries = 1080 rows
    "capital": (
        "What is the capital of {country}?",
        "Name the capital city of {country}.",
        "Which city is the capital of {country}?",
        "{country} has which capital?",
    ),
    "currency": (
        "What is the currency of {country}?",
        "Name the currency used in {country}.",
        "Which currency does {country} use?",
        "What money is used in {country}?",
    ),
    "colour": (
        "What is the national colour of {country}?",
        "Name the national colour of {country}.",
        "Which colour is the national colour of {country}?",
        "{country} has which national colour?",
    ),
}


@dataclass(frozen=True)
class Row:
    task: str
    instruction: str
    response: str
    pinned_to_train: bool = False


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    currency: str
    colour: str


def _syllables(rng: random.Random, count: int) -> str:
    return "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(count))


def _unique_names(rng: random.Random, count: int, make: Callable[[], str]) -> list[str]:
    """Draw `count` distinct names; the space is far larger than `count`, so this ends fast."""
    seen: set[str] = set()
    names: list[str] = []
    while len(names) < count:
        name = make()
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def invent_words(rng: random.Random, count: int) -> list[str]:
    """Pronounceable invented words of 3-7 letters (CV syllables, optional final consonant)."""

    def make() -> str:
        tail = rng.choice(_CONSONANTS) if rng.random() < 0.5 else ""
        return _syllables(rng, rng.randint(1, 3)) + tail

    return [w for w in _unique_names(rng, count * 2, make) if len(w) >= 3][:count]


def invent_countries(rng: random.Random, count: int) -> list[Country]:
    names = _unique_names(
        rng, count, lambda: (_syllables(rng, 2) + rng.choice(_COUNTRY_SUFFIXES)).capitalize()
    )
    capitals = _unique_names(
        rng, count, lambda: (_syllables(rng, 2) + rng.choice(_CAPITAL_SUFFIXES)).capitalize()
    )
    currencies = _unique_names(rng, count, lambda: _syllables(rng, 1) + rng.choice("klmnrst"))
    colours = [rng.choice(_COLOURS) for _ in range(count)]
    return [Country(*fields) for fields in zip(names, capitals, currencies, colours, strict=True)]


def arithmetic_rows(rng: random.Random) -> list[Row]:
    # Sample from the full candidate grid instead of retrying: unique by construction.
    adds = rng.sample([(a, b) for a in range(100) for b in range(100)], ROWS_PER_TASK["add"])
    subs = rng.sample(
        [(a, b) for a in range(100) for b in range(a + 1)], ROWS_PER_TASK["subtract"]
    )
    muls = rng.sample([(a, b) for a in range(31) for b in range(31)], ROWS_PER_TASK["multiply"])
    return (
        [Row("add", f"What is {a} + {b}?", str(a + b)) for a, b in adds]
        + [Row("subtract", f"What is {a} - {b}?", str(a - b)) for a, b in subs]
        + [Row("multiply", f"What is {a} * {b}?", str(a * b)) for a, b in muls]
    )


def string_rows(rng: random.Random) -> list[Row]:
    pool = invent_words(rng, 3000)

    def words(task: str) -> list[str]:
        return rng.sample(pool, ROWS_PER_TASK[task])

    rows = [Row("reverse", f"Reverse the word '{w}'.", w[::-1]) for w in words("reverse")]
    rows += [Row("uppercase", f"Write '{w}' in capitals.", w.upper()) for w in words("uppercase")]
    rows += [
        Row("first_letter", f"What is the first letter of '{w}'?", w[0])
        for w in words("first_letter")
    ]
    rows += [
        Row("last_letter", f"What is the last letter of '{w}'?", w[-1])
        for w in words("last_letter")
    ]
    for word in words("count_letter"):
        # One question in five asks for a letter that is absent, so "0" is a real answer.
        letter = rng.choice("abcdefghijklmnopqrstuvwxyz" if rng.random() < 0.2 else word)
        rows.append(
            Row(
                "count_letter",
                f"How many times does '{letter}' occur in '{word}'?",
                str(word.count(letter)),
            )
        )
    return rows


def lookup_rows(rng: random.Random, countries: list[Country]) -> list[Row]:
    rows: list[Row] = []
    for country in countries:
        for attribute, phrasings in LOOKUP_QUESTIONS.items():
            pinned = rng.randrange(len(phrasings))
            answer = getattr(country, attribute)
            rows += [
                Row("lookup", phrasing.format(country=country.name), answer, index == pinned)
                for index, phrasing in enumerate(phrasings)
            ]
    return rows


def split_rows(rng: random.Random, rows: list[Row]) -> dict[str, list[dict[str, str]]]:
    """Stratified split: each family gives 1/18 of its rows to validation and to eval."""
    records: list[dict[str, str]] = []
    for index_in_task, row in _number_within_task(rows):
        records.append({"id": f"{row.task}-{index_in_task}", "task": row.task,
                        "instruction": row.instruction, "response": row.response,
                        "_pinned": "1" if row.pinned_to_train else ""})
    splits: dict[str, list[dict[str, str]]] = {name: [] for name in SPLIT_NAMES}
    for task, count in ROWS_PER_TASK.items():
        family = [r for r in records if r["task"] == task]
        movable = [r for r in family if not r["_pinned"]]
        rng.shuffle(movable)
        held_out = count // HELD_OUT_FRACTION_DENOMINATOR
        splits["validation"] += movable[:held_out]
        splits["eval"] += movable[held_out : 2 * held_out]
        splits["train"] += movable[2 * held_out :] + [r for r in family if r["_pinned"]]
    for name in SPLIT_NAMES:
        rng.shuffle(splits[name])  # mix families so a reader of the first rows sees them all
        for record in splits[name]:
            del record["_pinned"]
    return splits


def _number_within_task(rows: Iterable[Row]) -> Iterable[tuple[int, Row]]:
    counters: dict[str, int] = {}
    for row in rows:
        counters[row.task] = counters.get(row.task, -1) + 1
        yield counters[row.task], row


def build_corpus(seed: int) -> tuple[list[Country], dict[str, list[dict[str, str]]]]:
    rng = random.Random(seed)
    countries = invent_countries(rng, NUM_COUNTRIES)
    rows = arithmetic_rows(rng) + string_rows(rng) + lookup_rows(rng, countries)
    _check_unique(rows)
    return countries, split_rows(rng, rows)


def _check_unique(rows: list[Row]) -> None:
    # A generator bug, not a user error: fail loudly rather than ship a leaking corpus.
    instructions = [r.instruction for r in rows]
    if len(set(instructions)) != len(instructions):
        raise AssertionError("generator produced a duplicate instruction")


def render_jsonl(records: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def render_lookup_table(countries: list[Country]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["country", "capital", "currency", "colour"])
    writer.writerows([c.name, c.capital, c.currency, c.colour] for c in countries)
    return buffer.getvalue()


def write_corpus(out_dir: Path, seed: int) -> dict[str, int]:
    """Write the three splits and the look-up table; returns rows per split."""
    countries, splits = build_corpus(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_dir / LOOKUP_TABLE_NAME, render_lookup_table(countries))
    for name, records in splits.items():
        _write_text(out_dir / f"{name}.jsonl", render_jsonl(records))
    return {name: len(records) for name, records in splits.items()}


def _write_text(path: Path, text: str) -> None:
    # Write-then-rename so an interrupted run never leaves a truncated split behind.
    atomic_write_text(path, text, mode=SHARED_FILE_MODE)


# -- synthetic corpora of any size, for benchmarks ---------------------------------------------

SCALING_TASKS = ("add", "reverse", "uppercase", "count_letter")
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]  # 70


def _index_word(index: int) -> str:
    """A distinct pronounceable word for every index: the base-70 digits of index + 70 (so at
    least two) as syllables."""
    number, syllables = index + len(_SYLLABLES), []
    while number:
        number, digit = divmod(number, len(_SYLLABLES))
        syllables.append(_SYLLABLES[digit])
    return "".join(syllables)


def scaling_record(index: int, seed: int) -> dict[str, str]:
    """Row `index` of the synthetic corpus: a pure function of (index, seed), so any range of
    rows is generated independently, and every instruction is distinct (it encodes index)."""
    task = SCALING_TASKS[index % len(SCALING_TASKS)]
    serial = index // len(SCALING_TASKS)
    mixed = (serial * 2_654_435_761 + seed * 97) % 1_000  # varied, deterministic operand
    word = _index_word(serial * 7 + seed % 7)
    if task == "add":
        instruction, response = f"What is {serial} + {mixed}?", str(serial + mixed)
    elif task == "reverse":
        instruction, response = f"Reverse the word '{word}'.", word[::-1]
    elif task == "uppercase":
        instruction, response = f"Write '{word}' in capitals.", word.upper()
    else:
        letter = word[mixed % len(word)]
        instruction = f"How many times does '{letter}' occur in '{word}'?"
        response = str(word.count(letter))
    return {"id": f"{task}-{serial}", "task": task, "instruction": instruction,
            "response": response}


def write_scaling_corpus(out_dir: Path, num_rows: int, seed: int = DEFAULT_SEED
                         ) -> dict[str, int]:
    """`num_rows` synthetic rows in total: 5 % validation, 5 % eval, the rest train, each split
    a disjoint range of row indexes (no instruction repeats within or across splits). Written
    line by line: memory does not grow with `num_rows`. Returns rows per split."""
    held_out = max(num_rows // 20, 1)
    sizes = {"train": num_rows - 2 * held_out, "validation": held_out, "eval": held_out}
    out_dir.mkdir(parents=True, exist_ok=True)
    start = 0
    for name, size in sizes.items():
        with open(out_dir / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as handle:
            for index in range(start, start + size):
                handle.write(json.dumps(scaling_record(index, seed), ensure_ascii=False) + "\n")
        start += size
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.generate",
        description="Generate the shipped instruction/response corpus deterministically.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output directory")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    rows_per_split = write_corpus(args.out, args.seed)
    print(f"wrote {rows_per_split} rows to {args.out} (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
