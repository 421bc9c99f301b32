"""The MLflow database locked by another writer: register fails with a clear error in
bounded time, leaves no version behind, and a re-run once the lock is gone converges to one
version of the digest."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry.errors import RegistryError
from registry.mlflow_registry import client_for
from tests.deploy.conftest import Registry

pytestmark = [pytest.mark.faults, pytest.mark.integration]
MODEL = "shipyard-locked"

_HOLD = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_register_against_a_locked_store_fails_cleanly_then_converges(
        registry: Registry, model_dirs: dict[str, Path]) -> None:
    client = client_for(registry.settings.mlflow_tracking_uri)
    client.search_experiments()  # create the store (schema) before another writer locks it
    db = registry.settings.mlflow_tracking_uri.removeprefix("sqlite:///")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, db, "300"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(RegistryError) as info:
            registry.register(model_dirs["stable"], MODEL)
        elapsed = time.monotonic() - started
        assert info.value.code == "MLFLOW_ERROR"
        assert "locked" in info.value.message
        assert elapsed < 240, f"waited {elapsed:.0f} s on a locked store"
    finally:
        holder.kill()
        holder.wait()
    # nothing half-written looks valid: no version of the model exists
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT COUNT(*) FROM model_versions WHERE name = ?",
                           (MODEL,)).fetchone()
    assert rows == (0,)
    first = registry.register(model_dirs["stable"], MODEL)
    again = registry.register(model_dirs["stable"], MODEL)
    assert first.version == again.version
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
