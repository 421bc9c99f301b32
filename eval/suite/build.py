"""Build the eval task data from a held-out split (``python -m eval.suite.build``).

Input: the held-out eval split, one JSON object per line with an ``id`` of the form
``<family>-<n>`` (``add-12``, ``reverse-3``), the instruction (``instruction`` in the shipped
corpus, ``prompt`` in a validated dataset) and the reference ``response``. Nothing here is
ever trained on: the corpus generator keeps eval disjoint from train and validation.

Output, one JSONL per task (see ``templates/`` for how lm-eval reads each one):

  shipyard_mc.jsonl       the formatted prompt, 4 choices (the reference + 3 distractors of
                          the same family), the index of the reference
  shipyard_ppl.jsonl      the formatted example (prompt + reference) to score token by token
  shipyard_exact.jsonl    the formatted prompt and the reference for greedy exact match
  shipyard_scoring_check.jsonl   the reference against 3 long random strings: any model whose log
                          probabilities are scored correctly ranks the short in-distribution
                          text first (accuracy ~1.0); broken scoring falls to chance (0.25)
  manifest.json           rows and sha256 per file, and the sha256 of the source rows

The output is a pure function of the input rows and `seed` (one `random.Random`), written
with a fixed key order and ``\\n`` line endings, so a re-run is byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import string
import sys
from dataclasses import dataclass
from pathlib import Path

from common.fs import SHARED_FILE_MODE, atomic_write_bytes
from common.template import format_prompt

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_DATA_DIR = PACKAGE_DIR / "data"
DEFAULT_SOURCE = PACKAGE_DIR.parent.parent / "data" / "corpus" / "eval.jsonl"
DEFAULT_SEED = 4242
MANIFEST_NAME = "manifest.json"
NUM_CHOICES = 4
SCORING_CHECK_ITEMS = 50
# Long enough that a distractor spans many more tokens than any reference answer, so its
# total log probability is far lower under any model that scores tokens at all.
SCORING_CHECK_DISTRACTOR_CHARS = 24
_SCORING_CHECK_ALPHABET = string.ascii_letters + string.digits + "#%&*+=?@^~"


@dataclass(frozen=True)
class EvalItem:
    id: str
    family: str
    prompt: str
    response: str


def load_items(path: Path) -> list[EvalItem]:
    """Read a held-out split written by the corpus generator or by validate_data."""
    items = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        prompt = row.get("instruction", row.get("prompt"))
        if not isinstance(prompt, str) or not isinstance(row.get("response"), str):
            raise ValueError(f"{path}:{line_number}: needs string 'instruction' or 'prompt' "
                             "and 'response' fields")
        row_id = str(row.get("id", line_number))
        family = str(row.get("task") or row_id.rsplit("-", 1)[0])
        items.append(EvalItem(row_id, family, prompt, row["response"]))
    return items


def source_digest(items: list[EvalItem]) -> str:
    """sha256 over the (id, prompt, response) rows: equal for the corpus file and the
    validated dataset's copy of it, whatever their column names."""
    payload = json.dumps([[i.id, i.prompt, i.response] for i in items], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def build_task_rows(items: list[EvalItem], seed: int = DEFAULT_SEED) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    by_family: dict[str, list[str]] = {}
    for item in items:
        by_family.setdefault(item.family, []).append(item.response)
    mc, ppl, exact = [], [], []
    for item in items:
        context = format_prompt(item.prompt)
        choices, gold = _with_gold(rng, item.response, draw_distractors(rng, item, by_family))
        mc.append({"id": item.id, "family": item.family, "context": context,
                   "choices": choices, "gold": gold})
        ppl.append({"id": item.id, "family": item.family, "text": context + item.response})
        exact.append({"id": item.id, "family": item.family, "prompt": item.prompt,
                      "context": context, "answer": item.response})
    scoring_check = []
    for item in items[:SCORING_CHECK_ITEMS]:
        noise = ["".join(rng.choices(_SCORING_CHECK_ALPHABET, k=SCORING_CHECK_DISTRACTOR_CHARS))
                 for _ in range(NUM_CHOICES - 1)]
        choices, gold = _with_gold(rng, item.response, noise)
        scoring_check.append({"id": item.id, "context": format_prompt(item.prompt),
                       "choices": choices, "gold": gold})
    return {"shipyard_mc": mc, "shipyard_ppl": ppl, "shipyard_exact": exact,
            "shipyard_scoring_check": scoring_check}


def draw_distractors(rng: random.Random, item: EvalItem, by_family: dict[str, list[str]]
                 ) -> list[str]:
    """Three wrong answers that look like right ones: other answers of the same family,
    topped up with near numbers or other letters where the family has too few."""
    pool = sorted(set(by_family[item.family]) - {item.response})
    answer = item.response
    if len(pool) < NUM_CHOICES - 1 and answer.isdigit():
        pool += [str(int(answer) + k) for k in (1, 2, 3, 4) if str(int(answer) + k) not in pool]
    elif len(pool) < NUM_CHOICES - 1 and len(answer) == 1:
        pool += [c for c in string.ascii_lowercase if c != answer and c not in pool]
    if len(pool) < NUM_CHOICES - 1:
        raise ValueError(f"item {item.id}: family {item.family!r} has too few distinct answers "
                         f"to draw {NUM_CHOICES - 1} distractors")
    return rng.sample(pool, NUM_CHOICES - 1)


def _with_gold(rng: random.Random, answer: str, wrong: list[str]) -> tuple[list[str], int]:
    # A random gold position: a scorer that always picks index 0 (e.g. all-equal scores
    # from broken logprobs) then lands at chance, not at a lucky 100%.
    gold = rng.randrange(NUM_CHOICES)
    return [*wrong[:gold], answer, *wrong[gold:]], gold


def render_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_task_data(items: list[EvalItem], out_dir: Path, seed: int = DEFAULT_SEED
                    ) -> dict[str, object]:
    """Write the task JSONLs and the manifest into `out_dir`; returns the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, object]] = {}
    for task, rows in build_task_rows(items, seed).items():
        data = render_jsonl(rows).encode("utf-8")
        _write_bytes(out_dir / f"{task}.jsonl", data)
        files[task] = {"rows": len(rows), "sha256": hashlib.sha256(data).hexdigest()}
    manifest: dict[str, object] = {"seed": seed, "source_rows": len(items),
                                   "source_sha256": source_digest(items), "files": files}
    _write_bytes(out_dir / MANIFEST_NAME,
                 (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return manifest


def _write_bytes(path: Path, data: bytes) -> None:
    # Write-then-rename: an interrupted build never leaves a truncated task file.
    atomic_write_bytes(path, data, mode=SHARED_FILE_MODE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.suite.build",
                                     description="Build the eval task JSONLs from a held-out "
                                                 "split, deterministically.")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="held-out split (JSONL with id, instruction|prompt, response)")
    parser.add_argument("--out", type=Path, default=SHIPPED_DATA_DIR, help="output directory")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    manifest = write_task_data(load_items(args.source), args.out, args.seed)
    print(json.dumps(manifest["files"], sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
