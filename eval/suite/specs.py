"""The task suite: what each task measures, and its YAMLs rendered for lm-eval.

lm-eval reads local data only through absolute ``data_files`` paths, so the YAMLs under
``templates/`` carry placeholders (``${data_dir}``, ``${bos_token}``, ``${max_gen_tokens}``)
and are rendered into an include directory before a run. The same rendered directory runs
with the plain CLI (see the README, "Stage: evaluate")::

    python -m eval.suite.specs --out /tmp/shipyard_tasks --model-dir MODEL_DIR
    lm_eval --model hf --model_args pretrained=MODEL_DIR,add_bos_token=False \\
        --include_path /tmp/shipyard_tasks --tasks shipyard_mc,shipyard_scoring_check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import string
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from eval.errors import EvalError
from eval.suite.build import (
    MANIFEST_NAME,
    PACKAGE_DIR,
    SHIPPED_DATA_DIR,
    load_items,
    source_digest,
    write_task_data,
)

TEMPLATES_DIR = PACKAGE_DIR / "templates"
SCORING_CHECK_TASK = "shipyard_scoring_check"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    # The metric the gate compares and floors apply to.
    primary_metric: str
    higher_is_better: bool
    # Per-item primary metric is 0/1 (accuracy, exact match): McNemar's test applies.
    binary: bool


TASK_SPECS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(SCORING_CHECK_TASK, "acc", higher_is_better=True, binary=True),
        TaskSpec("shipyard_mc", "acc", higher_is_better=True, binary=True),
        TaskSpec("shipyard_ppl", "bits_per_byte", higher_is_better=False, binary=False),
        TaskSpec("shipyard_exact", "exact_match", higher_is_better=True, binary=True),
    )
}


@dataclass(frozen=True)
class Suite:
    include_dir: Path  # rendered YAMLs: pass as lm-eval's include_path
    data_dir: Path
    tasks: tuple[str, ...]
    versions: dict[str, str]  # task -> metadata.version
    data_digests: dict[str, str]  # task -> sha256 of its JSONL
    source_sha256: str  # of the held-out rows the data was built from
    # True when the data is the shipped, committed files (the eval split is the shipped one).
    shipped: bool


def prepare_suite(work_dir: Path, tasks: list[str], *, bos_token: str, max_gen_tokens: int,
                  eval_split: Path | None = None) -> Suite:
    """Render `tasks` into `work_dir/include`.

    With `eval_split` (a validated dataset's held-out split) whose rows differ from those the
    shipped data was built from, the task data is rebuilt from it into `work_dir/data`, so
    a pipeline run on other data is evaluated on its own held-out items.
    """
    unknown = sorted(set(tasks) - set(TASK_SPECS))
    if unknown:
        raise EvalError("EVAL_UNKNOWN_TASK",
                        f"tasks {unknown} are not in the suite; known: {sorted(TASK_SPECS)}.")
    manifest = json.loads((SHIPPED_DATA_DIR / MANIFEST_NAME).read_text())
    data_dir, shipped = SHIPPED_DATA_DIR, True
    if eval_split is not None:
        items = load_items(eval_split)
        if source_digest(items) != manifest["source_sha256"]:
            data_dir, shipped = work_dir / "data", False
            manifest = write_task_data(items, data_dir)
    include_dir = work_dir / "include"
    versions = render_templates(include_dir, tasks, data_dir=data_dir, bos_token=bos_token,
                                max_gen_tokens=max_gen_tokens)
    digests = {task: _sha256(data_dir / f"{task}.jsonl") for task in tasks}
    return Suite(include_dir, data_dir, tuple(tasks), versions, digests,
                 str(manifest["source_sha256"]), shipped)


def render_templates(include_dir: Path, tasks: list[str], *, data_dir: Path, bos_token: str,
                     max_gen_tokens: int) -> dict[str, str]:
    """Write one YAML per task into `include_dir`; returns each task's metadata.version."""
    include_dir.mkdir(parents=True, exist_ok=True)
    values = {"data_dir": str(data_dir.resolve()), "bos_token": _yaml_escape(bos_token),
              "max_gen_tokens": str(max_gen_tokens)}
    versions = {}
    for task in tasks:
        text = string.Template((TEMPLATES_DIR / f"{task}.yaml").read_text()).substitute(values)
        versions[task] = str(yaml.safe_load(text)["metadata"]["version"])
        (include_dir / f"{task}.yaml").write_text(text)
    return versions


def _yaml_escape(text: str) -> str:
    # The BOS string lands inside a double-quoted YAML scalar.
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.suite.specs",
                                     description="Render the task YAMLs for the lm_eval CLI.")
    parser.add_argument("--out", type=Path, required=True, help="include directory to write")
    parser.add_argument("--model-dir", type=Path,
                        help="model whose tokenizer's BOS string prefixes the prompts")
    parser.add_argument("--bos-token", help="BOS string (instead of --model-dir)")
    parser.add_argument("--max-gen-tokens", type=int, default=16)
    parser.add_argument("--tasks", default=",".join(TASK_SPECS))
    args = parser.parse_args(argv)
    bos = args.bos_token
    if bos is None and args.model_dir is not None:
        from transformers import AutoTokenizer

        bos = AutoTokenizer.from_pretrained(args.model_dir).bos_token or ""
    if bos is None:
        parser.error("give --model-dir or --bos-token")
    suite = prepare_suite(args.out, args.tasks.split(","), bos_token=bos,
                          max_gen_tokens=args.max_gen_tokens)
    print(suite.include_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
