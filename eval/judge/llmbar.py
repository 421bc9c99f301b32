"""LLMBar: the human-labelled answer pairs the judge is calibrated on (vendored, MIT).

``data/llmbar/`` holds princeton-nlp/LLMBar at commit 900616bf (Zeng et al., ICLR 2024)
unchanged, with its LICENSE, a README with the attribution, SHA256SUMS and the published
judges' results (``reference_judges.csv``). Each record is an instruction, two outputs and
the label (1 or 2) of the output that follows the instruction better, by expert or human
annotation. Every file is checked against SHA256SUMS before it is read: an edited or
truncated file is refused by name, never half-used.

A subset's pairs are its first `limit` records, in the file's order (deterministic, the same
for every judge, so calibrations compare).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.errors import EvalError

DATA_DIR = Path(__file__).resolve().parent / "data" / "llmbar"
SOURCE = ("LLMBar (princeton-nlp/LLMBar at commit 900616bff90b6c6c8e1681f7d079250637c55992, "
          "Zeng et al., ICLR 2024, MIT): expert/human labels")
# Subset name (config and report) -> (file, name in reference_judges.csv or None).
SUBSETS: dict[str, tuple[str, str | None]] = {
    "natural": ("LLMBar_Natural.json", "LLMBar/Natural"),
    "adversarial_gptinst": ("LLMBar_Adversarial_GPTInst.json", "LLMBar/Adversarial/GPTInst"),
    "adversarial_gptout": ("LLMBar_Adversarial_GPTOut.json", "LLMBar/Adversarial/GPTOut"),
    "adversarial_manual": ("LLMBar_Adversarial_Manual.json", "LLMBar/Adversarial/Manual"),
    "adversarial_neighbor": ("LLMBar_Adversarial_Neighbor.json",
                             "LLMBar/Adversarial/Neighbor"),
    "mt_bench": ("Processed_MT-Bench.json", None),
    "faireval": ("Processed_FairEval.json", None),
    "llmeval2": ("Processed_LLMEval_2.json", None),
}
SUMS_FILE = "SHA256SUMS"
REFERENCE_FILE = "reference_judges.csv"


@dataclass(frozen=True)
class HumanPair:
    id: str  # "<subset>/<index in the file>"
    subset: str
    instruction: str
    output_1: str
    output_2: str
    # "1" or "2": the output the annotators preferred.
    label: str


@dataclass(frozen=True)
class ReferenceJudge:
    """A published judge's result on a subset (LLMBar's evaluator outputs), as fractions."""
    judge: str
    # "Vanilla" (one prompt) or "Swap" (LLMBar's swap-and-synthesize strategy)
    strategy: str
    accuracy_average: float  # over both answer orders
    accuracy_both_orders: float  # right in both orders
    order_agreement: float  # same output chosen in both orders


def expected_sums(data_dir: Path = DATA_DIR) -> dict[str, str]:
    path = data_dir / SUMS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalError("EVAL_JUDGE_DATA_DIGEST_MISMATCH",
                        f"{path}: cannot read the LLMBar checksums ({exc}). Reinstall shipyard "
                        "or restore eval/judge/data/llmbar/ from git.") from exc
    sums = {}
    for line in lines:
        digest, _, name = line.strip().partition("  ")
        if digest:
            sums[name] = digest
    return sums


def data_digest(subsets: Sequence[str], data_dir: Path = DATA_DIR) -> str:
    """sha256 over the chosen files' pinned digests: what a calibration was measured on."""
    sums = expected_sums(data_dir)
    listing = "".join(f"{sums[SUBSETS[s][0]]}  {SUBSETS[s][0]}\n" for s in sorted(subsets))
    return hashlib.sha256(listing.encode()).hexdigest()


def load_subset(subset: str, limit: int | None = None, data_dir: Path = DATA_DIR
                ) -> list[HumanPair]:
    """The first `limit` pairs of `subset` (all when None), after checking the file's sum."""
    if subset not in SUBSETS:
        raise EvalError("EVAL_CONFIG_INVALID",
                        f"unknown LLMBar subset {subset!r}; eval.judge.calibration_subsets "
                        f"takes names from {list(SUBSETS)}.")
    name = SUBSETS[subset][0]
    path = data_dir / name
    expected = expected_sums(data_dir).get(name)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _mismatch(path, f"cannot be read ({exc})") from exc
    found = hashlib.sha256(raw).hexdigest()
    if expected is None or found != expected:
        raise _mismatch(path, f"sha256 {found} != {expected} pinned in {SUMS_FILE}")
    records = json.loads(raw)[:limit]
    return [HumanPair(f"{subset}/{i}", subset, r["input"], r["output_1"], r["output_2"],
                      str(r["label"])) for i, r in enumerate(records)]


def _mismatch(path: Path, what: str) -> EvalError:
    return EvalError("EVAL_JUDGE_DATA_DIGEST_MISMATCH",
                     f"LLMBar file {path}: {what}. The human-labelled calibration set must be "
                     "the vendored copy exactly; restore it with `git checkout -- "
                     "eval/judge/data/llmbar` (or reinstall shipyard).",
                     details={"file": str(path)})


def reference_judges(subset: str, data_dir: Path = DATA_DIR) -> list[ReferenceJudge]:
    """Published judges on `subset` (none are published here for MT-Bench, FairEval and
    LLMEval², whose rows LLMBar's results table does not carry)."""
    csv_name = SUBSETS[subset][1]
    if csv_name is None:
        return []
    with (data_dir / REFERENCE_FILE).open(encoding="utf-8", newline="") as handle:
        return [ReferenceJudge(row["judge"], row["strategy"],
                               float(row["accuracy_average"]) / 100,
                               float(row["accuracy_both_orders"]) / 100,
                               float(row["position_agreement"]) / 100)
                for row in csv.DictReader(handle) if row["subset"] == csv_name]
