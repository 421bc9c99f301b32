"""common/fs.py: the one durable, private atomic write, and the files it leaves readable to
their owner only (state, records, keys)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

import pytest

from common import fs
from common.settings import Settings
from deploy.decision_record import write_record
from deploy.state import DeploymentState, save_state, state_path
from registry.signing import ensure_key_pair
from tests.deploy.records import finished_record

pytestmark = pytest.mark.unit


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_partial_one(
    tmp_path: Path,
) -> None:
    folder = fs.private_dir(tmp_path / "deployment")
    path = folder / "state.json"
    fs.atomic_write_text(path, "old\n")

    def half_then_fail(handle: BinaryIO) -> None:
        handle.write(b"new, but only ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        fs.atomic_write_with(path, half_then_fail)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in folder.iterdir()) == ["state.json"]  # no temp file left


def test_a_failed_rename_leaves_no_temp_file(tmp_path: Path) -> None:
    folder = fs.private_dir(tmp_path / "out")
    target = folder / "a-directory"
    target.mkdir()
    (target / "keep").write_text("x")  # a non-empty directory cannot be renamed over
    with pytest.raises(OSError):
        fs.atomic_write_bytes(target, b"data")
    assert sorted(p.name for p in folder.iterdir()) == ["a-directory"]


def test_files_are_created_with_their_final_mode(tmp_path: Path) -> None:
    private, shared = tmp_path / "private", tmp_path / "shared"
    fs.atomic_write_bytes(private, b"secret")
    fs.atomic_write_bytes(shared, b"report", mode=fs.SHARED_FILE_MODE)
    assert (_mode(private), _mode(shared)) == (0o600, 0o644)
    assert private.read_bytes() == b"secret"


def test_create_never_replaces_an_existing_file(tmp_path: Path) -> None:
    path = fs.private_dir(tmp_path / "keys") / "signing.key"
    assert fs.atomic_create_bytes(path, b"first")
    assert not fs.atomic_create_bytes(path, b"second")
    assert path.read_bytes() == b"first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["signing.key"]


def test_keys_state_and_records_are_not_world_readable(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual default: files 0644, directories 0755
    try:
        home = tmp_path / "private-home"
        settings = Settings(home=home, mlflow_tracking_uri="sqlite:///x.db",
                            mlflow_artifact_root=tmp_path / "a")
        keys = ensure_key_pair(settings.keys_dir)
        state = save_state(home, DeploymentState(name="tiny"))
        record = write_record(state_path(home, "tiny").parent,
                              finished_record("models:/tiny/1", deployment="tiny"))
    finally:
        os.umask(old_umask)
    for path in (keys.private_key_path, state, record, record.with_name("latest.json")):
        assert _mode(path) & 0o077 == 0, f"{path} is {oct(_mode(path))}"
    for directory in (settings.keys_dir, state.parent, record.parent, home / "deployments"):
        assert _mode(directory) == 0o700, f"{directory} is {oct(_mode(directory))}"
