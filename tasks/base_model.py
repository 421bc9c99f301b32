"""Flyte task `provision_base`: BaseConfig -> BaseModel (a thin shell over
`training.pretrained.provision_base_model`), and the check every consumer of a BaseModel runs
on it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, TypeVar

from flytekit import Cache, Resources, task
from flytekit.types.directory import FlyteDirectory

from common.digests import model_root_digest
from common.errors import StageError
from common.layout import HomeLayout
from common.settings import load_settings
from tasks import timeouts
from tasks.caching import COMMON, code_version
from tasks.contracts import BaseModel
from tasks.flyte_adapter import STAGE_DECK_FIELDS, quiet_console
from training.pretrained import (
    BaseConfig,
    is_provisioned_placeholder,
    provision_base_model,
)

T = TypeVar("T", bound=Any)


@task(
    timeout=timeouts.PROVISION,
    # the source's digest (read by resolve_config) is an input: a changed local file converts
    # again; a packaged model is pinned in the code this version covers
    cache=Cache(version=code_version(*COMMON, "tasks/base_model.py", "training/pretrained.py",
                                     packages=("transformers", "gguf", "safetensors"))),
    retries=1,
    enable_deck=False,
    deck_fields=STAGE_DECK_FIELDS,
    requests=Resources(cpu="2", mem="4Gi"),
)
def provision_base(config: BaseConfig, source_digest: str | None) -> BaseModel | None:
    """None when no base is configured (a model trained from scratch)."""
    if config.source is None:
        return None
    quiet_console()
    started = time.time()
    provisioned = provision_base_model(config.source, load_settings().layout.base_models_dir,
                                       gguf_sha256=config.gguf_sha256)
    identity = provisioned.identity
    recorded = identity.gguf_sha256 if identity.gguf_sha256 is not None \
        else identity.model_digest
    if source_digest is not None and recorded != source_digest:
        raise StageError(
            "BASE_MODEL_DIGEST_MISMATCH",
            f"base.source={config.source!r}: read as {source_digest} when the run started, "
            f"provisioned as {recorded}. The source changed during the run; run it again.")
    print(f"[shipyard] base model {config.source}: {provisioned.model_dir} "
          f"(digest {identity.model_digest}, licence {identity.licence}, "
          f"{time.time() - started:.1f} s)")
    return BaseModel(model_dir=FlyteDirectory(str(provisioned.model_dir)),
                     model_digest=identity.model_digest, identity=identity)


def with_base_model_dir(config: T, base: BaseModel | None, stage: str) -> T:
    """`config` (DataConfig or TrainConfig) with base_model_dir set to the verified local copy
    of `base`; a placeholder left by resolve_config without a base is a wiring error."""
    if base is not None:
        return dataclasses.replace(config, base_model_dir=str(base_model_path(base)))
    if is_provisioned_placeholder(config.base_model_dir):
        raise StageError(
            "CONFIG_INVALID",
            f"{stage}: base_model_dir={config.base_model_dir!r} names a provisioned base, but "
            "no base model was passed. Wire provision_base's output into this task "
            "(workflows/pipeline.py does).")
    return config


def base_model_path(base: BaseModel) -> Path:
    """The base model's directory on this machine, after checking it is the one provisioned:
    a stage never trains on, or takes the tokenizer of, files whose digest is not recorded."""
    path = Path(base.model_dir.download())
    found = model_root_digest(path)
    if found != base.model_digest or found != base.identity.model_digest:
        raise StageError(
            "BASE_MODEL_DIGEST_MISMATCH",
            f"base model {path}: root digest {found}, but {base.model_digest} was provisioned. "
            "The files changed after provisioning; delete the converted copy under "
            f"{HomeLayout(Path('<SHIPYARD_HOME>')).base_models_dir}/ and run again.")
    return path
