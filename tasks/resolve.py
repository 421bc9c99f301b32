"""`resolve_config`: preset + overrides -> each stage's typed config, checked up front.

It runs first and is never cached, so a bad preset or override fails in seconds, before any
expensive stage starts, and so that the dataset files' digests (part of validate_data's cache
key) are read fresh on every run. On a local run that may deploy on real vLLM it also starts
creating the vLLM CPU venv in the background (`start_vllm_venv_early`), so that download
overlaps the stages before deploy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from flytekit import task

from common.config import build_config, load_preset
from common.cost import CostConfig
from common.errors import StageError
from data.config import DataConfig
from data.io_location import check_split_location, sha256_location
from deploy.config import DeployConfig
from eval.config import RENAMED_KEYS as EVAL_RENAMED_KEYS
from eval.config import EvalConfig
from registry.config import RegisterConfig
from tasks import timeouts
from tasks.flyte_adapter import is_remote_execution, quiet_console
from training.config import TrainConfig
from training.pretrained import BaseConfig, provisioned_placeholder, source_digest

KNOWN_SECTIONS = ("base", "data", "train", "eval", "register", "deploy", "cost")
# Settings several stages read, each declared once in one section and handed by `resolve` to
# the other stages' configs: setting one in another section is an error, so the stages can
# never disagree (evaluate compares against the alias deploy moves).
SHARED_KEYS = {"champion_alias": ("register", ("eval", "deploy"))}


class ResolvedConfig(NamedTuple):
    # the pretrained model to fine-tune (source None: train from scratch, the tiny preset)
    base: BaseConfig
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    register: RegisterConfig
    deploy: DeployConfig
    # prices that turn each stage's resource use into USD (common/cost.py)
    cost: CostConfig
    # sha256 of each input split file, read now: it is part of validate_data's cache key, so
    # a file edited in place at the same path or URI is validated again, never served stale.
    source_digests: dict[str, str]
    # what base.source is now (training.pretrained.source_digest): provision_base's cache key
    base_source_digest: str | None


def resolve(preset: str, overrides: list[str] | None = None) -> ResolvedConfig:
    raw = load_preset(preset, overrides)
    unknown = sorted(set(raw) - set(KNOWN_SECTIONS))
    if unknown:
        raise StageError("CONFIG_UNKNOWN_KEY",
                         f"preset {preset!r}: unknown section(s) {unknown}; known: "
                         f"{list(KNOWN_SECTIONS)}.")
    _refuse_shared_keys(preset, raw)
    base = build_config(BaseConfig, "base", raw.get("base", {}))
    raw = _with_provisioned_base(preset, raw, base)
    data = build_config(DataConfig, "data", raw.get("data", {}))
    train = build_config(TrainConfig, "train", raw.get("train", {}))
    digests = {split: sha256_location(check_split_location(split, location))
               for split, location in data.split_paths().items()}
    register = build_config(RegisterConfig, "register", raw.get("register", {}))
    shared = {"champion_alias": register.champion_alias}
    evaluation = build_config(EvalConfig, "eval", {**raw.get("eval", {}), **shared},
                              renamed=EVAL_RENAMED_KEYS)
    deploy = build_config(DeployConfig, "deploy", {**raw.get("deploy", {}), **shared})
    cost = build_config(CostConfig, "cost", raw.get("cost", {}))
    return ResolvedConfig(base=base, data=data, train=train, eval=evaluation,
                          register=register, deploy=deploy, cost=cost, source_digests=digests,
                          base_source_digest=source_digest(base))


def _with_provisioned_base(preset: str, raw: dict[str, dict[str, Any]],
                           base: BaseConfig) -> dict[str, dict[str, Any]]:
    """With base.source the provisioned model is the dataset's tokenizer and train's start
    point: data/train.base_model_dir are set to a placeholder naming the source (so their
    checks, e.g. LoRA needs a base, see one), replaced by the verified local directory in the
    validate_data and train tasks. A path set in the preset too would be a second, unverified
    base, and is refused."""
    if base.source is None:
        return raw
    out = {section: dict(values) for section, values in raw.items()}
    for section in ("data", "train"):
        value = out.get(section, {}).get("base_model_dir")
        if value is not None:
            raise StageError(
                "CONFIG_INVALID",
                f"preset {preset!r}: {section}.base_model_dir={value!r} and "
                f"base.source={base.source!r} are both set. With base.source the provisioned "
                f"model is used by every stage; unset {section}.base_model_dir.")
        out.setdefault(section, {})["base_model_dir"] = provisioned_placeholder(base.source)
    return out


def _refuse_shared_keys(preset: str, raw: dict[str, dict[str, Any]]) -> None:
    for key, (owner, readers) in SHARED_KEYS.items():
        for section in readers:
            if key in raw.get(section, {}):
                raise StageError(
                    "CONFIG_UNKNOWN_KEY",
                    f"preset {preset!r}: {section}.{key} is not set per stage; set "
                    f"{owner}.{key} instead: {owner}, {' and '.join(readers)} all read "
                    "that one value.")


def start_vllm_venv_early(deploy: DeployConfig) -> None:
    """On a local run whose deploy may use real vLLM, create its CPU venv (minutes, once per
    machine) in the background now, so the download overlaps the stages before deploy."""
    if is_remote_execution() or deploy.backend != "local" or deploy.engine == "local":
        return
    from common.settings import load_settings
    from serving.vllm_venv import start_background_install, vllm_venv_dir

    start_background_install(vllm_venv_dir(deploy.vllm_venv_dir, load_settings().home))


@task(cache=False, retries=0, timeout=timeouts.RESOLVE)
def resolve_config(preset: str, overrides: list[str]) -> ResolvedConfig:
    quiet_console()  # the first task of a run: quiet from here on
    resolved = resolve(preset, overrides)
    start_vllm_venv_early(resolved.deploy)
    return resolved
