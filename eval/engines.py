"""Where the evaluated models and the judge answer: given endpoints, or engines this stage
starts (and stops: every engine lives in the caller's ExitStack and dies with the stage)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from common.digests import model_root_digest
from eval.config import EvalConfig
from eval.harness import ModelSource
from eval.judge.client import JudgeEndpoint, first_served_model
from training.pretrained import provision_base_model

CANDIDATE_NAME, CHAMPION_NAME, JUDGE_NAME = "candidate", "champion", "judge"


def model_source(config: EvalConfig, model_dir: Path, digest: str, name: str,
                 engines: ExitStack, base_url: str | None) -> ModelSource:
    """The model at `model_dir` for the harness. On the local-completions path without a
    `base_url`, a `serving_engine` is started on it, serving it as `name`."""
    if config.model_path == "local-completions" and base_url is None:
        base_url = start_engine(config, model_dir, name, engines)
    return ModelSource(model_dir, digest, config.model_path, base_url=base_url,
                       served_model_name=name if base_url else None)


def judge_endpoints(config: EvalConfig, engines: ExitStack, api_key: str | None,
                    models_cache: Path) -> list[JudgeEndpoint]:
    """The judge, then the other jury members: configured servers, or engines started here
    on a model directory or a provisioned base-model source (`models_cache`: where sources
    are converted, shared with the base model's provisioning). Empty: no judge configured."""
    first: list[JudgeEndpoint] = []
    if config.judge.base_url is not None:
        model = config.judge.model or first_served_model(config.judge.base_url, api_key)
        first = [JudgeEndpoint(config.judge.base_url, model, api_key,
                               model_digest=config.judge.model_digest)]
    elif config.judge.model_dir is not None:
        model_dir = Path(config.judge.model_dir)
        digest = config.judge.model_digest or model_root_digest(model_dir)
        first = [_served_judge(config, model_dir, digest, JUDGE_NAME, engines,
                               config.judge.model)]
    elif config.judge.source is not None:
        first = [_provisioned_judge(config, config.judge.source, engines, models_cache)]
    # Every served judge answers as "judge" (on its own port): its identity in a jury and in
    # the caches is then its weights' digest, so the same weights twice are refused as a jury.
    jury = [_provisioned_judge(config, source, engines, models_cache)
            for source in config.judge.jury_sources]
    jury += [JudgeEndpoint(url, first_served_model(url, api_key), api_key)
             for url in config.judge.jury_base_urls]
    return first + jury


def _provisioned_judge(config: EvalConfig, source: str, engines: ExitStack,
                       models_cache: Path) -> JudgeEndpoint:
    """A judge from a base-model source: provisioned as `base.source` is (pinned package or
    local file, its digest checked), then served like any model directory."""
    provisioned = provision_base_model(source, models_cache)
    return _served_judge(config, provisioned.model_dir, provisioned.identity.model_digest,
                         JUDGE_NAME, engines, None)


def _served_judge(config: EvalConfig, model_dir: Path, digest: str, name: str,
                  engines: ExitStack, model: str | None) -> JudgeEndpoint:
    # Served under `name` whatever it is: its digest tells two judge models apart in the
    # verdict and calibration caches (and in a jury).
    base_url = start_engine(config, model_dir, name, engines)
    return JudgeEndpoint(base_url, model or name, None, model_digest=digest)


def start_engine(config: EvalConfig, model_dir: Path, name: str, engines: ExitStack) -> str:
    """Start `serving_engine` on `model_dir`; returns its base URL. Stopped with `engines`."""
    from serving.engine import start_engine as start_serving_engine

    engine = engines.enter_context(start_serving_engine(
        config.serving_engine, model_dir, name,
        ready_timeout_seconds=config.engine_ready_timeout_seconds,
        enforce_eager=config.engine_enforce_eager,
        vllm_venv_dir=Path(config.vllm_venv_dir) if config.vllm_venv_dir else None))
    return engine.base_url
