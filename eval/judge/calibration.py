"""Judge calibration: agreement and Cohen's kappa on a labelled set of answer pairs.

The shipped set (``data/calibration_pairs_<version>.jsonl``) is REFERENCE-LABELLED, not
human-labelled: no person has labelled these pairs. Each pair puts the checkable reference
answer of a held-out item against a plausible wrong answer of the same task family, on a
side drawn at random; the "preferred" side is the one matching the reference. On this
corpus (arithmetic, string transforms, look-ups) that is the label a careful human would
give, and it stands in for human labels until a human-labelled set replaces it (same file
format, a new version). Built deterministically: ``python -m eval.judge.calibration``.

The judge is run exactly as it is used on candidates (pairwise prompt, both orders); its
label for a pair is A, B, or TIE (a tie or an inconsistent pair), INVALID for an invalid
output. Reported beside the human-label calibration (eval/judge/human_calibration.py), which
is the one that decides whether the judge gates: these labels are not human.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.fs import SHARED_FILE_MODE, atomic_write_text
from eval.judge.client import Judge
from eval.judge.pairwise import PairItem, judge_pairs
from eval.judge.prompts import JudgePrompt
from eval.stats import cohen_kappa
from eval.suite.build import DEFAULT_SOURCE, EvalItem, draw_distractors, load_items

DATA_DIR = Path(__file__).resolve().parent / "data"
LABEL_SOURCE = ("reference-labelled: the preferred side is the one matching the checkable "
                "reference answer (generated deterministically), standing in for human "
                "labels")
DEFAULT_NUM_PAIRS = 60
DEFAULT_SEED = 777
_OUTCOME_LABEL = {"candidate": "A", "champion": "B", "tie": "TIE", "inconsistent": "TIE",
                  "invalid": "INVALID"}


@dataclass(frozen=True)
class CalibrationPair:
    id: str
    prompt: str
    response_a: str
    response_b: str
    preferred: str  # "A" or "B"


@dataclass(frozen=True)
class CalibrationResult:
    version: str
    label_source: str
    num_pairs: int
    agreement: float
    kappa: float
    kappa_stderr: float
    min_kappa: float
    # kappa >= min_kappa (NaN kappa never passes)
    passed: bool
    judge_labels: dict[str, int]
    invalid_output_rate: float


def calibration_path(version: str) -> Path:
    return DATA_DIR / f"calibration_pairs_{version}.jsonl"


def load_pairs(path: Path) -> list[CalibrationPair]:
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            pairs.append(CalibrationPair(row["id"], row["prompt"], row["response_a"],
                                         row["response_b"], row["preferred"]))
    return pairs


def calibrate(client: Judge, prompt: JudgePrompt, pairs: Sequence[CalibrationPair], *,
              version: str, min_kappa: float) -> CalibrationResult:
    # The pairwise machinery calls side A "candidate": the judge's label is then A / B.
    verdicts = judge_pairs(client, prompt, [
        PairItem(p.id, p.prompt, p.response_a, p.response_b) for p in pairs])
    judge_labels = [_OUTCOME_LABEL[v.outcome] for v in verdicts]
    kappa = cohen_kappa([p.preferred for p in pairs], judge_labels)
    raw = [r for v in verdicts for r in (v.candidate_first, v.champion_first)]
    counts = {label: judge_labels.count(label) for label in sorted(set(judge_labels))}
    return CalibrationResult(
        version=version,
        label_source=LABEL_SOURCE,
        num_pairs=len(pairs),
        agreement=kappa.observed_agreement,
        kappa=kappa.kappa,
        kappa_stderr=kappa.standard_error,
        min_kappa=min_kappa,
        passed=kappa.kappa >= min_kappa,  # False for NaN
        judge_labels=counts,
        invalid_output_rate=sum(r is None for r in raw) / len(raw) if raw else float("nan"),
    )


def build_pairs(items: Sequence[EvalItem], *, num_pairs: int = DEFAULT_NUM_PAIRS,
                seed: int = DEFAULT_SEED) -> list[dict[str, str]]:
    """Reference answer vs a same-family wrong answer, the reference on a random side."""
    rng = random.Random(seed)
    by_family: dict[str, list[str]] = {}
    for item in items:
        by_family.setdefault(item.family, []).append(item.response)
    rows = []
    # The last items of the split: disjoint from the first ones the judge sees in a run.
    for item in list(items)[-num_pairs:]:
        wrong = draw_distractors(rng, item, by_family)[0]
        preferred = rng.choice("AB")
        a, b = (item.response, wrong) if preferred == "A" else (wrong, item.response)
        rows.append({"id": item.id, "prompt": item.prompt, "response_a": a, "response_b": b,
                     "preferred": preferred})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.judge.calibration",
                                     description="Build the reference-labelled calibration "
                                                 "pairs deterministically.")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--num-pairs", type=int, default=DEFAULT_NUM_PAIRS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    rows = build_pairs(load_items(args.source), num_pairs=args.num_pairs, seed=args.seed)
    path = calibration_path(args.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                      mode=SHARED_FILE_MODE)
    print(f"wrote {len(rows)} pairs to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
