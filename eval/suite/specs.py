"""The task suite: what each task measures, and its YAMLs rendered for lm-eval.

lm-eval reads local data only through absolute ``data_files`` paths, so the YAMLs under
``templates/`` carry placeholders (``${data_file}``, ``${bos_token}``, ``${max_gen_tokens}``)
and are rendered into an include directory before a run. Tasks whose YAML names Python
(``!function``: IFEval's scoring, the chat prompt task class) get a one-line forwarding module
beside the rendered YAML. The same rendered directory runs
with the plain CLI (docs/stages/evaluate.md)::

    python -m eval.suite.specs --out /tmp/shipyard_tasks --model-dir MODEL_DIR
    lm_eval --model hf --model_args pretrained=MODEL_DIR,add_bos_token=False \\
        --include_path /tmp/shipyard_tasks --tasks shipyard_mc,shipyard_scoring_check
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from common.digests import sha256_file
from eval.errors import EvalError
from eval.suite.build import (
    MANIFEST_NAME,
    PACKAGE_DIR,
    SHIPPED_DATA_DIR,
    load_items,
    source_digest,
    write_task_data,
)
from eval.suite.chat_rows import (
    SKILL_TASK,
    chat_source_digest,
    is_chat_split,
    load_chat_items,
    write_skill_data,
)
from eval.suite.ifeval import IFEVAL_TASK, LM_EVAL_IFEVAL_MAX_GEN_TOKENS, ifeval_data_path

TEMPLATES_DIR = PACKAGE_DIR / "templates"
SCORING_CHECK_TASK = "shipyard_scoring_check"
# The tasks eval/suite/build.py builds from prompt/response rows (shipped, or rebuilt from the
# eval split); IFEval's data comes from its package, the skill task's from a chat eval split.
BUILT_TASKS = (SCORING_CHECK_TASK, "shipyard_mc", "shipyard_ppl", "shipyard_exact")
# Modules lm-eval's `!function` imports from beside a rendered YAML: they forward to eval/.
_FUNCTION_MODULES = {
    IFEVAL_TASK: ("ifeval_functions.py",
                  "from eval.suite.ifeval import agg_inst_level_acc, process_results\n"),
    SKILL_TASK: ("chat_task.py", "from eval.suite.chat_task import ChatPromptTask\n"),
}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    # The metric the gate compares and floors apply to.
    primary_metric: str
    higher_is_better: bool
    # Per-item primary metric is 0/1 (accuracy, exact match): McNemar's test applies.
    binary: bool
    # generate_until: each sample keeps the generated text.
    generates: bool = False


TASK_SPECS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(SCORING_CHECK_TASK, "acc", higher_is_better=True, binary=True),
        TaskSpec("shipyard_mc", "acc", higher_is_better=True, binary=True),
        TaskSpec("shipyard_ppl", "bits_per_byte", higher_is_better=False, binary=False),
        TaskSpec("shipyard_exact", "exact_match", higher_is_better=True, binary=True,
                 generates=True),
        TaskSpec(IFEVAL_TASK, "prompt_level_strict_acc", higher_is_better=True, binary=True,
                 generates=True),
        TaskSpec(SKILL_TASK, "exact_match", higher_is_better=True, binary=True,
                 generates=True),
    )
}


@dataclass(frozen=True)
class GenerationCaps:
    """Tokens generated per item, by task (each changes that task's scores)."""

    exact: int = 16
    ifeval: int = LM_EVAL_IFEVAL_MAX_GEN_TOKENS
    skill: int = 256

    def for_task(self, task: str) -> int:
        return {IFEVAL_TASK: self.ifeval, SKILL_TASK: self.skill}.get(task, self.exact)


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
    # task -> its JSONL (the built tasks' under data_dir; IFEval's in its package).
    data_files: dict[str, Path] = field(default_factory=dict)
    # sha256 of the chat conversations shipyard_skill was built from (None: no chat split).
    chat_source_sha256: str | None = None
    # task -> tokens generated per item (generate_until tasks).
    max_gen_tokens: dict[str, int] = field(default_factory=dict)


def prepare_suite(work_dir: Path, tasks: list[str], *, bos_token: str, max_gen_tokens: int,
                  eval_split: Path | None = None,
                  ifeval_max_gen_tokens: int = LM_EVAL_IFEVAL_MAX_GEN_TOKENS,
                  skill_max_gen_tokens: int = GenerationCaps.skill) -> Suite:
    """Render `tasks` into `work_dir/include`.

    With `eval_split` (a validated dataset's held-out split) whose rows differ from those the
    shipped data was built from, the task data is rebuilt from it into `work_dir/data`, so
    a pipeline run on other data is evaluated on its own held-out items. A chat split
    (rows of ``messages``) builds shipyard_skill; the built tasks then keep the shipped data
    (they need prompt/response rows). `bos_token` prefixes the text prompts: "" for a model
    prompted through its chat template (the template writes its own start tokens).
    """
    unknown = sorted(set(tasks) - set(TASK_SPECS))
    if unknown:
        raise EvalError("EVAL_UNKNOWN_TASK",
                        f"tasks {unknown} are not in the suite; known: {sorted(TASK_SPECS)}.")
    caps = GenerationCaps(max_gen_tokens, ifeval_max_gen_tokens, skill_max_gen_tokens)
    manifest = json.loads((SHIPPED_DATA_DIR / MANIFEST_NAME).read_text())
    data_dir, shipped = SHIPPED_DATA_DIR, True
    chat_split = eval_split is not None and is_chat_split(eval_split)
    if eval_split is not None and not chat_split:
        items = load_items(eval_split)
        if source_digest(items) != manifest["source_sha256"]:
            data_dir, shipped = work_dir / "data", False
            manifest = write_task_data(items, data_dir)
    data_files = {task: data_dir / f"{task}.jsonl" for task in tasks if task in BUILT_TASKS}
    chat_digest = None
    if SKILL_TASK in tasks:
        if eval_split is None or not chat_split:
            raise EvalError(
                "EVAL_SKILL_DATA_MISSING",
                f"eval.tasks has {SKILL_TASK!r} but the eval split "
                f"({eval_split or 'none given'}) holds no chat rows ({{id, messages}}). Its "
                "items are the held-out conversations of a data.format: chat dataset; drop "
                f"{SKILL_TASK!r} from eval.tasks for prompt/response data.")
        chat_items = load_chat_items(eval_split)
        chat_digest = chat_source_digest(chat_items)
        data_files[SKILL_TASK] = write_skill_data(chat_items, work_dir / "chat-data")
    if IFEVAL_TASK in tasks:
        data_files[IFEVAL_TASK] = ifeval_data_path()
    include_dir = work_dir / "include"
    versions = render_templates(include_dir, tasks, data_files=data_files,
                                bos_token=bos_token, caps=caps)
    digests: dict[str, str] = {task: sha256_file(data_files[task]) for task in tasks}
    generation = {task: caps.for_task(task) for task in tasks if TASK_SPECS[task].generates}
    return Suite(include_dir, data_dir, tuple(tasks), versions, digests,
                 str(manifest["source_sha256"]), shipped, data_files, chat_digest, generation)


def render_templates(include_dir: Path, tasks: list[str], *, data_files: dict[str, Path],
                     bos_token: str, caps: GenerationCaps) -> dict[str, str]:
    """Write one YAML per task (and the modules their `!function`s name) into
    `include_dir`; returns each task's metadata.version."""
    include_dir.mkdir(parents=True, exist_ok=True)
    versions = {}
    for task in tasks:
        values = {"data_file": str(data_files[task].resolve()),
                  "bos_token": _yaml_escape(bos_token),
                  "max_gen_tokens": str(caps.for_task(task))}
        text = string.Template((TEMPLATES_DIR / f"{task}.yaml").read_text()).substitute(values)
        versions[task] = str(yaml.safe_load(_without_tags(text))["metadata"]["version"])
        (include_dir / f"{task}.yaml").write_text(text)
        if task in _FUNCTION_MODULES:
            name, source = _FUNCTION_MODULES[task]
            (include_dir / name).write_text(source)
    return versions


def _without_tags(text: str) -> str:
    # safe_load refuses lm-eval's `!function` tag; the version is all that is read here.
    return text.replace("!function ", "")


def _yaml_escape(text: str) -> str:
    # The BOS string lands inside a double-quoted YAML scalar.
    return text.replace("\\", "\\\\").replace('"', '\\"')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.suite.specs",
                                     description="Render the task YAMLs for the lm_eval CLI.")
    parser.add_argument("--out", type=Path, required=True, help="include directory to write")
    parser.add_argument("--model-dir", type=Path,
                        help="model whose tokenizer's BOS string prefixes the prompts")
    parser.add_argument("--bos-token", help="BOS string (instead of --model-dir)")
    parser.add_argument("--chat", action="store_true",
                        help="prompts go through the model's chat template (run lm_eval with "
                             "--apply_chat_template): no BOS string in the prompts")
    parser.add_argument("--max-gen-tokens", type=int, default=16)
    parser.add_argument("--ifeval-max-gen-tokens", type=int,
                        default=LM_EVAL_IFEVAL_MAX_GEN_TOKENS)
    parser.add_argument("--eval-split", type=Path,
                        help="held-out split to build the data from (a chat split builds "
                             f"{SKILL_TASK})")
    parser.add_argument("--tasks", default=",".join(BUILT_TASKS))
    args = parser.parse_args(argv)
    bos = args.bos_token
    if args.chat:
        bos = ""
    if bos is None and args.model_dir is not None:
        from transformers import AutoTokenizer

        bos = AutoTokenizer.from_pretrained(args.model_dir).bos_token or ""
    if bos is None:
        parser.error("give --model-dir or --bos-token")
    suite = prepare_suite(args.out, args.tasks.split(","), bos_token=bos,
                          max_gen_tokens=args.max_gen_tokens, eval_split=args.eval_split,
                          ifeval_max_gen_tokens=args.ifeval_max_gen_tokens)
    print(suite.include_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
