"""Where the evaluated models and the judge answer: given endpoints, or engines this stage
starts (and stops: every engine lives in the caller's ExitStack and dies with the stage)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from common.digests import model_root_digest
from eval.config import EvalConfig
from eval.harness import ModelSource
from eval.judge.client import JudgeEndpoint, first_served_model

CANDIDATE_NAME, CHAMPION_NAME, JUDGE_NAME = "candidate", "champion", "judge"


def model_source(config: EvalConfig, model_dir: Path, digest: str, name: str,
                 engines: ExitStack, base_url: str | None) -> ModelSource:
    """The model at `model_dir` for the harness. On the local-completions path without a
    `base_url`, a `serving_engine` is started on it, serving it as `name`."""
    if config.model_path == "local-completions" and base_url is None:
        base_url = start_engine(config, model_dir, name, engines)
    return ModelSource(model_dir, digest, config.model_path, base_url=base_url,
                       served_model_name=name if base_url else None)


def judge_endpoint(config: EvalConfig, engines: ExitStack, api_key: str | None
                   ) -> JudgeEndpoint | None:
    """The configured judge server, or an engine started on `judge_model_dir`; None when no
    judge is configured."""
    if config.judge_base_url is not None:
        model = config.judge_model or first_served_model(config.judge_base_url, api_key)
        return JudgeEndpoint(config.judge_base_url, model, api_key,
                             model_digest=config.judge_model_digest)
    if config.judge_model_dir is not None:
        model_dir = Path(config.judge_model_dir)
        # Served as "judge" whatever it is: its digest tells two judge models apart in the
        # verdict and calibration caches.
        digest = config.judge_model_digest or model_root_digest(model_dir)
        base_url = start_engine(config, model_dir, JUDGE_NAME, engines)
        return JudgeEndpoint(base_url, config.judge_model or JUDGE_NAME, None,
                             model_digest=digest)
    return None


def start_engine(config: EvalConfig, model_dir: Path, name: str, engines: ExitStack) -> str:
    """Start `serving_engine` on `model_dir`; returns its base URL. Stopped with `engines`."""
    from serving.engine import start_engine as start_serving_engine

    engine = engines.enter_context(start_serving_engine(
        config.serving_engine, model_dir, name,
        ready_timeout_seconds=config.engine_ready_timeout_seconds))
    return engine.base_url
