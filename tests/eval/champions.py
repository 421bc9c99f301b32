"""A champion the way the pipeline makes one: registered (signed, attested) by the real
register stage into this test's MLflow store, then promoted the way deploy does."""

from __future__ import annotations

from pathlib import Path

from common.settings import load_settings
from registry.aliases import champion_version, move_champion
from registry.mlflow_registry import client_for
from registry.stage import RegistrationResult
from tests.eval.conftest import TinyModel
from tests.registry.conftest import SPLITS, Store, register, run_artifacts_dir


def settings_store() -> Store:
    """The store `load_settings()` points at (this test's SHIPYARD_HOME)."""
    settings = load_settings()
    return Store(tracking_uri=settings.mlflow_tracking_uri,
                 artifact_root=settings.mlflow_artifact_root, key_dir=settings.keys_dir,
                 db_path=settings.home / "mlflow.db")


def register_champion(model: TinyModel, dataset_dir: Path, name: str,
                      champion_alias: str = "champion") -> RegistrationResult:
    store = settings_store()
    result = register(store, model.model_dir,
                      {split: dataset_dir / f"{split}.jsonl" for split in SPLITS}, name)
    client = client_for(store.tracking_uri)
    move_champion(client, name, result.version, champion_alias,
                  expected_current=champion_version(client, name, champion_alias))
    return result


def tamper_with_weights(result: RegistrationResult) -> None:
    """Flip one bit of the stored weights, as someone with write access to the artifact
    store could."""
    weights = run_artifacts_dir(settings_store(), result.mlflow_run_id) / "model" / \
        "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
