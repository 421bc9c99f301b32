"""Fixtures for the registry tests: a tiny HF Llama, its dataset splits and one real MLflow
store (sqlite + local artifact directory) shared by the session.

Each test that changes stored artifacts registers its own model name, so tampering with one
version never leaks into another test; sharing the store keeps MLflow's schema creation
(about 2 s) to once per session.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from common.digests import model_root_digest, sha256_file
from common.settings import PROJECT_ROOT
from registry.config import RegisterConfig
from registry.mlflow_registry import client_for
from registry.stage import RegistrationRequest, RegistrationResult, register_model

SPLITS = ("train", "validation", "eval")
RESOLVED_CONFIG_JSON = json.dumps({"model_preset": "tiny", "max_steps": 12, "seed": 0})


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (random-weight) Llama saved the way the train stage saves it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        max_position_embeddings=64,
    )
    out = tmp_path_factory.mktemp("tiny-model") / "model"
    LlamaForCausalLM(config).save_pretrained(out)
    # max_new_tokens within the context, or MLflow signature inference fails (STACK-NOTES).
    GenerationConfig(max_new_tokens=16).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def dataset_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dataset")
    files = {}
    for split in SPLITS:
        path = root / f"{split}.jsonl"
        rows = [{"id": f"{split}-{i}", "prompt": f"q{i}", "response": f"a{i}"} for i in range(3)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files[split] = path
    return files


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    artifact_root: Path
    key_dir: Path
    db_path: Path

    @property
    def public_key(self) -> Path:
        return self.key_dir / "signing.pub"

    @property
    def private_key(self) -> Path:
        return self.key_dir / "signing.key"


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("registry-store")
    return Store(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifact_root=root / "mlartifacts",
        key_dir=root / "keys",
        db_path=root / "mlflow.db",
    )


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model a test may change before registering."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@pytest.fixture
def model_name(request: pytest.FixtureRequest) -> str:
    """A registered model name unique to the test."""
    return "t-" + re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")


# What the pipeline's evaluate stage hands to registration when its gate passed; the default
# verification policy requires it.
PASSED_EVAL: dict[str, Any] = {"gate_outcome": "PASS", "summary": {"shipyard_mc": {"acc": 0.5}}}


def stage_kwargs(
    store: Store,
    model_dir: Path,
    dataset_files: dict[str, Path],
    name: str,
    *,
    eval_report: dict[str, Any] | None = PASSED_EVAL,
    **config_overrides: Any,
) -> dict[str, Any]:
    """The values the Flyte task passes to `register_model`, against `store`."""
    return {
        "model_dir": model_dir,
        "model_digest": model_root_digest(model_dir),
        "dataset_digests": {s: sha256_file(p) for s, p in dataset_files.items()},
        "dataset_files": dataset_files,
        "config_digest": hashlib.sha256(RESOLVED_CONFIG_JSON.encode()).hexdigest(),
        "resolved_config_json": RESOLVED_CONFIG_JSON,
        "training_run_id": None,
        "eval_report": eval_report,
        "config": RegisterConfig(registered_model_name=name, **config_overrides),
        "tracking_uri": store.tracking_uri,
        "artifact_root": store.artifact_root,
        "key_dir": store.key_dir,
        "execution_id": "local:development:test-execution",
        "project_root": PROJECT_ROOT,
    }


def register(
    store: Store,
    model_dir: Path,
    dataset_files: dict[str, Path],
    name: str,
    *,
    eval_report: dict[str, Any] | None = PASSED_EVAL,
    **config_overrides: Any,
) -> RegistrationResult:
    kwargs = stage_kwargs(
        store, model_dir, dataset_files, name, eval_report=eval_report, **config_overrides
    )
    return register_model(RegistrationRequest(**kwargs))


def run_artifacts_dir(store: Store, run_id: str) -> Path:
    """Local directory of a run's artifacts, where an attacker with store access edits."""
    artifact_uri = client_for(store.tracking_uri).get_run(run_id).info.artifact_uri
    return Path(urlparse(artifact_uri).path)


def allow_imports_from(keys_dir: Path, source: str) -> Path:
    """Add `source` to the local trust policy's allowed_import_sources, as a user would
    (generating and pinning the key pair first when there is none)."""
    import yaml

    from registry.policy import LOCAL_TRUST_POLICY_NAME
    from registry.signing import ensure_key_pair

    ensure_key_pair(keys_dir)
    path = keys_dir / LOCAL_TRUST_POLICY_NAME
    raw = yaml.safe_load(path.read_text())
    raw["allowed_import_sources"] = [*(raw.get("allowed_import_sources") or []), source]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
