"""Typed values passed between stages.

Artifacts travel as `FlyteDirectory`/`FlyteFile` together with their digests, so a stage can
check that what it received is what the previous stage produced. A model directory is
identified by its model-signing root digest; every other file by its sha256.
"""

from __future__ import annotations

from dataclasses import dataclass

from flytekit.types.directory import FlyteDirectory


@dataclass
class ValidatedDataset:
    # train.jsonl, validation.jsonl, eval.jsonl (columns: id, prompt, response),
    # tokenizer/ (HF format), validation_report.json
    files: FlyteDirectory
    split_digests: dict[str, str]
    split_rows: dict[str, int]
    tokenizer_digest: str
    report_digest: str


@dataclass
class TrainedModel:
    # HF model directory: config.json, model.safetensors, tokenizer files, generation_config.json
    model_dir: FlyteDirectory
    # model-signing root digest of `model_dir` (see registry.digest.model_root_digest)
    model_digest: str
    # sha256 digests of the dataset splits the model was trained on, by split name
    dataset_digests: dict[str, str]
    # final metrics: final_loss, final_val_loss, tokens_per_second, num_parameters, ...
    metrics: dict[str, float]
    # per-step training loss (index = step - 1)
    loss_curve: list[float]
    # JSON of the resolved TrainConfig (after preset + overrides + derived values)
    resolved_config_json: str
    # sha256 of resolved_config_json
    config_digest: str
    mlflow_run_id: str
