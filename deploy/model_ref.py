"""The model a deploy serves, after verification: the bytes on disk that were checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.digests import Sha256


@dataclass(frozen=True)
class ModelToDeploy:
    """What the deploy request names (the register stage's output)."""

    registered_model_name: str
    version: str
    # model-signing root digest the request expects; verification must find the same
    model_digest: Sha256
    # the registration run: the decision record is logged to its experiment
    mlflow_run_id: str | None = None

    @property
    def model_uri(self) -> str:
        return f"models:/{self.registered_model_name}/{self.version}"


@dataclass(frozen=True)
class VerifiedModel:
    model_uri: str
    version: str
    digest: Sha256
    # the verified files themselves (registry.verify's download_dir/model)
    model_dir: Path
    served_model_name: str
