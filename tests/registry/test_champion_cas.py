"""The champion alias moves only by compare-and-set (CHAMPION_MOVED), and two registrations of
one digest at once create one version (the registration lock on a local store)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.settings import PROJECT_ROOT
from registry.aliases import champion_version, move_champion
from registry.errors import RegistryError
from registry.mlflow_registry import client_for
from registry.stage import RegistrationResult
from tests.registry.conftest import Store, register

pytestmark = pytest.mark.integration


@pytest.fixture
def two_versions(store: Store, model_copy: Path, dataset_files: dict[str, Path],
                 model_name: str) -> tuple[RegistrationResult, RegistrationResult]:
    first = register(store, model_copy, dataset_files, model_name)
    (model_copy / "generation_config.json").write_text('{"max_new_tokens": 8}')
    return first, register(store, model_copy, dataset_files, model_name)


def test_the_champion_moves_only_from_the_value_read(
    store: Store, two_versions: tuple[RegistrationResult, RegistrationResult]
) -> None:
    first, second = two_versions
    client, name = client_for(store.tracking_uri), first.registered_model_name
    move_champion(client, name, first.version, expected_current=None)  # first deployment
    assert champion_version(client, name) == first.version
    # A deploy read "no champion yet", someone else set it meanwhile: refused, not overwritten.
    with pytest.raises(RegistryError) as failure:
        move_champion(client, name, second.version, expected_current=None)
    assert failure.value.code == "CHAMPION_MOVED"
    assert (failure.value.expected, failure.value.found) == ("None", first.version)
    assert champion_version(client, name) == first.version
    move_champion(client, name, second.version, expected_current=first.version)
    assert champion_version(client, name) == second.version


_REGISTER = """
import json, sys
from pathlib import Path
from registry.stage import RegistrationRequest, register_model
from tests.registry.conftest import Store, stage_kwargs
args = json.loads(sys.argv[1])
store = Store(args["tracking_uri"], Path(args["artifact_root"]), Path(args["key_dir"]),
              Path(args["db_path"]))
files = {k: Path(v) for k, v in args["files"].items()}
result = register_model(RegistrationRequest(**stage_kwargs(
    store, Path(args["model_dir"]), files, args["name"])))
print(json.dumps({"version": result.version, "created": result.created}))
"""


def test_two_concurrent_registrations_of_one_digest_create_one_version(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> None:
    register(store, model_copy, dataset_files,
             f"{model_name}-warm")  # the shared key pair and the store's schema exist first
    args = json.dumps({
        "tracking_uri": store.tracking_uri, "artifact_root": str(store.artifact_root),
        "key_dir": str(store.key_dir), "db_path": str(store.db_path),
        "files": {k: str(v) for k, v in dataset_files.items()},
        "model_dir": str(model_copy), "name": model_name})
    processes = [subprocess.Popen([sys.executable, "-c", _REGISTER, args], cwd=PROJECT_ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    versions = client_for(store.tracking_uri).search_model_versions(f"name = '{model_name}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert {r["version"] for r in results} == {"1"}
    assert sorted(r["created"] for r in results) == [False, True]
