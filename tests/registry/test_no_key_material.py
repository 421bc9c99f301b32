"""The private signing key never leaves its file: not in MLflow tags, params or artifacts,
not in the MLflow database, not in logs or printed output."""

from __future__ import annotations

import base64
import logging
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from registry.mlflow_registry import client_for
from registry.stage import RegistrationRequest, register_model
from tests.registry.conftest import Store, stage_kwargs

pytestmark = pytest.mark.integration


def _secret_fragments(private_key_path: Path) -> list[bytes]:
    """Every form the key could leak in: PEM lines, base64 DER, raw scalar (hex, bytes)."""
    pem = private_key_path.read_bytes()
    body_lines = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return [
        *body_lines,
        b"".join(body_lines),
        base64.b64encode(der),
        scalar,
        scalar.hex().encode(),
        base64.b64encode(scalar),
    ]


def _leaks(blob: bytes, fragments: list[bytes]) -> list[str]:
    return [f"fragment {i}" for i, fragment in enumerate(fragments) if fragment in blob]


def test_private_key_material_appears_nowhere(
    store: Store,
    tmp_path: Path,
    model_copy: Path,
    dataset_files: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A key directory of its own, so the key is generated (and announced) inside this test;
    # the scan then covers the whole shared store, every other test's artifacts included.
    key_dir = tmp_path / "keys"
    caplog.set_level(logging.DEBUG)
    kwargs = stage_kwargs(store, model_copy, dataset_files, "secret-scan", key_dir=str(key_dir))
    result = register_model(RegistrationRequest(**kwargs))
    output = capsys.readouterr()

    private_key = key_dir / "signing.key"
    assert stat.S_IMODE(private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(private_key.parent.stat().st_mode) == 0o700
    # The path is printed (so the user can find and back up the key), the key is not.
    assert str(private_key) in output.out
    fragments = _secret_fragments(private_key)

    client = client_for(store.tracking_uri)
    version = client.get_model_version("secret-scan", result.version)
    run = client.get_run(result.mlflow_run_id)
    registry_text = repr((version.tags, run.data.tags, run.data.params, version.source))
    assert _leaks(registry_text.encode(), fragments) == []

    artifacts = [p for p in store.artifact_root.rglob("*") if p.is_file()]
    assert any(p.name == "provenance.dsse.json" for p in artifacts)
    for path in artifacts:
        assert _leaks(path.read_bytes(), fragments) == [], path
    assert _leaks(store.db_path.read_bytes(), fragments) == []
    assert _leaks((caplog.text + output.out + output.err).encode(), fragments) == []
