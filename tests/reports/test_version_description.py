"""The MLflow model version carries a description people can read: gate outcome, digest, the
data, and the command that verifies it (a real sqlite MLflow store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.mlflow_registry import client_for
from tests.registry.conftest import (  # noqa: F401  (fixtures)
    Store,
    dataset_files,
    model_name,
    register,
    store,
    tiny_model_dir,
)

pytestmark = pytest.mark.integration


def test_registered_version_has_a_readable_description(
    store: Store, tiny_model_dir: Path, dataset_files: dict[str, Path],  # noqa: F811
    model_name: str,  # noqa: F811
) -> None:
    result = register(store, tiny_model_dir, dataset_files, model_name)
    version = client_for(store.tracking_uri).get_model_version(model_name, result.version)
    text = version.description or ""
    assert f"**{model_name} version {result.version}**: eval gate **PASS**." in text
    assert f"model digest: `sha256:{result.model_digest}`" in text
    for split in ("train", "validation", "eval"):
        assert f"- {split}: `{version.tags[f'dataset_digest.{split}']}`" in text
    assert (f"shipyard verify models:/{model_name}/{result.version} "
            f"--expected-digest sha256:{result.model_digest}") in text
    assert "shipyard_mc" in text  # the eval summary
