"""What a user runs by hand: `shipyard verify` (exit codes, messages) and the upstream
`model_signing` verifier on the files downloaded from MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from model_signing import verifying

from common.settings import PROJECT_ROOT
from registry.cli import main
from registry.mlflow_registry import client_for
from registry.stage import RegistrationResult
from tests.conftest import subprocess_env
from tests.registry.conftest import Store, register, run_artifacts_dir

pytestmark = pytest.mark.integration


@pytest.fixture
def registered(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> RegistrationResult:
    return register(store, model_copy, dataset_files, model_name)


def _download(store: Store, result: RegistrationResult, dst: Path) -> tuple[Path, Path]:
    client = client_for(store.tracking_uri)
    model = client.download_artifacts(result.mlflow_run_id, "model", str(dst))
    signature = client.download_artifacts(result.mlflow_run_id, "attestations/model.sig", str(dst))
    return Path(model), Path(signature)


def test_cli_verify_passes_with_exit_code_zero(
    store: Store, registered: RegistrationResult, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "verify",
            f"models:/{registered.registered_model_name}@challenger",
            "--tracking-uri",
            store.tracking_uri,
            "--public-key",
            str(store.public_key),
            "--policy",
            str(store.key_dir / "trust-policy.yaml"),  # pins the test key
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"sha256:{registered.model_digest}" in out
    assert "[passed] model_signature" in out and "[passed] policy_builder" in out


def test_cli_verify_fails_closed_with_the_check_on_stderr(
    store: Store, registered: RegistrationResult, isolated_home: Path
) -> None:
    weights = run_artifacts_dir(store, registered.mlflow_run_id) / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x7f")
    # As a user runs it: a fresh interpreter, `python -m registry.cli`.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "registry.cli",
            "verify",
            registered.model_uri,
            "--tracking-uri",
            store.tracking_uri,
            "--public-key",
            str(store.public_key),
            "--policy",
            str(store.key_dir / "trust-policy.yaml"),  # pins the test key
        ],
        cwd=PROJECT_ROOT,
        env=subprocess_env(isolated_home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "check:    model_signature" in done.stderr
    assert "modified model.safetensors" in done.stderr
    assert f"expected: sha256:{registered.model_digest}" in done.stderr


def test_cli_rejects_a_malformed_model_uri(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["verify", "runs:/abc/model", "--tracking-uri", store.tracking_uri])
    assert code == 2
    assert "models:/NAME@ALIAS" in capsys.readouterr().err


def test_upstream_model_signing_api_verifies_our_signature(
    store: Store, registered: RegistrationResult, tmp_path: Path
) -> None:
    model_dir, signature = _download(store, registered, tmp_path)
    verifying.Config().use_elliptic_key_verifier(public_key=store.public_key).verify(
        model_dir, signature
    )
    (model_dir / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"config\.json"):
        verifying.Config().use_elliptic_key_verifier(public_key=store.public_key).verify(
            model_dir, signature
        )


def test_upstream_model_signing_cli_verifies_our_signature(
    store: Store, registered: RegistrationResult, tmp_path: Path, isolated_home: Path
) -> None:
    model_dir, signature = _download(store, registered, tmp_path)
    # The exact command registry/README.md documents.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_signing",
            "verify",
            "key",
            str(model_dir),
            "--signature",
            str(signature),
            "--public_key",
            str(store.public_key),
        ],
        env=subprocess_env(isolated_home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
