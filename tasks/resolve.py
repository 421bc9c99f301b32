"""`resolve_config`: preset + overrides -> each stage's typed config, checked up front.

It runs first and is never cached, so a bad preset or override fails in seconds, before any
expensive stage starts, and so that the dataset files' digests (part of validate_data's cache
key) are read fresh on every run.
"""

from __future__ import annotations

from typing import NamedTuple

from flytekit import task

from common.config import build_config, load_preset
from common.errors import StageError
from data.config import DataConfig
from data.io import check_split_location, sha256_location
from deploy.config import DeployConfig
from eval.config import EvalConfig
from registry.config import RegisterConfig
from training.config import TrainConfig

KNOWN_SECTIONS = ("data", "train", "eval", "register", "deploy")


class ResolvedConfig(NamedTuple):
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    register: RegisterConfig
    deploy: DeployConfig
    # sha256 of each input split file, read now: it is part of validate_data's cache key, so
    # a file edited in place at the same path or URI is validated again, never served stale.
    source_digests: dict[str, str]


def resolve(preset: str, overrides: list[str] | None = None) -> ResolvedConfig:
    raw = load_preset(preset, overrides)
    unknown = sorted(set(raw) - set(KNOWN_SECTIONS))
    if unknown:
        raise StageError("CONFIG_UNKNOWN_KEY",
                         f"preset {preset!r}: unknown section(s) {unknown}; known: "
                         f"{list(KNOWN_SECTIONS)}.")
    data = build_config(DataConfig, "data", raw.get("data", {}))
    train = build_config(TrainConfig, "train", raw.get("train", {}))
    digests = {split: sha256_location(check_split_location(split, location))
               for split, location in data.split_paths().items()}
    register = build_config(RegisterConfig, "register", raw.get("register", {}))
    evaluation = build_config(EvalConfig, "eval", raw.get("eval", {}))
    deploy = build_config(DeployConfig, "deploy", raw.get("deploy", {}))
    return ResolvedConfig(data=data, train=train, eval=evaluation, register=register,
                          deploy=deploy, source_digests=digests)


@task(cache=False, retries=0)
def resolve_config(preset: str, overrides: list[str]) -> ResolvedConfig:
    return resolve(preset, overrides)
