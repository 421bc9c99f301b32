"""`evaluate_model`: the evaluate stage with its plumbing, as the Flyte task calls it.

    check eval split -> verify champion -> start engines -> run_eval -> log to MLflow -> summary

`eval.stage.run_eval` measures and decides given running endpoints; this module finds and
verifies the champion (eval/champion.py), starts the engines the config asks for and stops
them when the measuring is done (eval/engines.py), and logs to MLflow (eval/tracking.py).
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

from common.digests import model_root_digest, sha256_file
from common.settings import Settings
from common.signals import signals_raise_stage_interrupted
from eval.cache import prune_eval_cache
from eval.champion import load_champion
from eval.config import EvalConfig
from eval.engines import CANDIDATE_NAME, CHAMPION_NAME, judge_endpoints, model_source
from eval.errors import EvalError
from eval.stage import run_eval
from eval.summary import EvalSummary, summarize
from eval.tracking import log_to_mlflow


def evaluate_model(*, model_dir: Path, model_digest: str, training_run_id: str,
                   eval_split: Path, eval_split_digest: str | None, config: EvalConfig,
                   settings: Settings, work_dir: Path, judge_api_key: str | None = None
                   ) -> EvalSummary:
    """Evaluate the model at `model_dir` against the verified champion, if any.

    `eval_split_digest`: the sha256 validate_data recorded for `eval_split` (a mismatch is
    EVAL_DATASET_DIGEST_MISMATCH). A gate FAIL is returned, not raised: the report is written
    and logged either way (`EvalSummary.require_pass` raises it).

    `work_dir` is scratch space this function owns: on return it holds only the report
    (`EvalSummary.report_path`, which the caller publishes and Flyte uploads after the task
    body); on any failure it is removed entirely. Task suites, lm-eval outputs and samples
    would otherwise pile up in the temp directory on every evaluation."""
    try:
        with signals_raise_stage_interrupted():  # SIGTERM: the engines below stop too
            summary = _evaluate(model_dir=model_dir, model_digest=model_digest,
                                training_run_id=training_run_id, eval_split=eval_split,
                                eval_split_digest=eval_split_digest, config=config,
                                settings=settings, work_dir=work_dir,
                                judge_api_key=judge_api_key)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    remove_all_but(work_dir, keep=[summary.report_path])
    return summary


def remove_all_but(directory: Path, *, keep: list[Path]) -> None:
    """Delete everything under `directory` except the files in `keep` (and their parents)."""
    kept = {p.resolve() for p in keep}
    kept_parents = {parent for p in kept for parent in p.parents}
    if not directory.is_dir():
        return
    for child in directory.iterdir():
        resolved = child.resolve()
        if resolved in kept:
            continue
        if resolved in kept_parents:
            remove_all_but(child, keep=keep)
        elif child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _evaluate(*, model_dir: Path, model_digest: str, training_run_id: str, eval_split: Path,
              eval_split_digest: str | None, config: EvalConfig, settings: Settings,
              work_dir: Path, judge_api_key: str | None) -> EvalSummary:
    if sha256_file(eval_split) != eval_split_digest:
        raise EvalError("EVAL_DATASET_DIGEST_MISMATCH",
                        f"{eval_split}: sha256 differs from the digest validate_data recorded. "
                        "Re-run validate_data; do not edit its outputs.")
    # Score only the bytes the evaluation is about: the report (and the gate decision that
    # registration and deploy rely on) is bound to this digest.
    found = model_root_digest(model_dir)
    if found != model_digest:
        raise EvalError("EVAL_MODEL_DIGEST_MISMATCH",
                        f"{model_dir}: files digest {found} != the model digest {model_digest} "
                        "train recorded. The model files changed after training; re-run train "
                        "(do not edit its outputs).")
    cache_dir = Path(config.cache_dir) if config.cache_dir else settings.layout.eval_cache_dir
    with ExitStack() as engines:
        # The champion's files are only needed while it is evaluated (they can be large).
        champion_dir = Path(engines.enter_context(
            tempfile.TemporaryDirectory(prefix="shipyard-champion-")))
        champion = load_champion(config, settings.mlflow_tracking_uri, settings.keys_dir,
                                 champion_dir)
        candidate = model_source(config, model_dir, model_digest, CANDIDATE_NAME, engines,
                                 config.completions_base_url)
        champion_source = None
        if champion is not None:
            # completions_base_url serves the candidate; the champion gets its own engine.
            champion_source = model_source(config, champion.model_dir, champion.digest,
                                           CHAMPION_NAME, engines, None)
        # Judge engines start only when the answers they judge exist (after both harness
        # runs), so they do not hold memory and cores while the models generate.
        outcome = run_eval(config, candidate, work_dir=work_dir, champion=champion_source,
                           start_judges=lambda: judge_endpoints(
                               config, engines, judge_api_key,
                               settings.layout.base_models_dir),
                           eval_split=eval_split, cache_dir=cache_dir)
    run_id = log_to_mlflow(outcome, settings.mlflow_tracking_uri, training_run_id)
    if config.cache_max_bytes is not None:
        in_use = [model_digest] + ([champion.digest] if champion is not None else [])
        prune_eval_cache(cache_dir, config.cache_max_bytes, in_use_digests=in_use)
    return summarize(outcome, champion, run_id)
