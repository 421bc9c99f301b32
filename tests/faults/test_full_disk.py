"""SHIPYARD_HOME on a full disk (a small tmpfs): register fails with a clear error, leaves no
version that looks valid, and converges once space is freed. Needs root (mount); skips with
the reason otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.errors import RegistryError
from registry.mlflow_registry import client_for
from tests.deploy.conftest import Registry, make_registry

pytestmark = [pytest.mark.faults, pytest.mark.integration]
MODEL = "shipyard-full-disk"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs",
                              str(mount_point)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_register_on_a_full_disk_fails_cleanly_then_converges(
        small_disk: Path, model_dirs: dict[str, Path]) -> None:
    registry: Registry = make_registry(small_disk / "home")
    client = client_for(registry.settings.mlflow_tracking_uri)
    client.search_experiments()  # the store exists; now the disk fills up
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(free - (64 << 10), 0))  # leave 64 KiB: less than a model
    with pytest.raises(RegistryError) as info:
        registry.register(model_dirs["stable"], MODEL)
    assert info.value.code in {"MLFLOW_ERROR", "SIGNING_FAILED", "KEY_INVALID"}, info.value
    assert "No space left on device" in info.value.message or "disk" in info.value.message

    filler.unlink()
    # nothing half-written looks valid: whatever exists of the model verifies or is absent
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert versions == [], [v.version for v in versions]
    first = registry.register(model_dirs["stable"], MODEL)
    assert registry.register(model_dirs["stable"], MODEL).version == first.version
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
