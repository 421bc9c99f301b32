"""register killed at points inside its work, then run again.

The stage runs as its own process (as under Flyte) in its own process group. The child wraps
one registry call so that the process stops right there (the real call has run, or is about
to) and says so; the test then sends SIGTERM or SIGKILL. The points:

- ``model_logged``: the model files are logged to the registration run, the attestations
  are not, no version exists;
- ``version_created``: the MLflow version exists with its tags (one transaction), its
  description and self-check have not run, it has no alias;
- ``before_challenger``: the version verified and its run finished, the alias not yet set.

SIGKILL lands at every point, SIGTERM mid-commit (``version_created``). After the kill: no
process of the group is left, nothing half-written looks like a usable
version (no version, or a complete one that verifies and has no alias yet), the champion
never moved. The re-run converges: one version of the digest, verified, challenger alias on
it, champion still the earlier version. SIGTERM also marks the registration run FAILED
(register raises StageInterrupted); SIGKILL leaves it RUNNING, with no version pointing at it
unless the version was already complete.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from common.digests import model_root_digest
from common.settings import PROJECT_ROOT
from registry.aliases import CHALLENGER_ALIAS, alias_versions, move_champion
from registry.mlflow_registry import TAG_MODEL_DIGEST, client_for
from registry.policy import Policy
from registry.stage import RegistrationRequest, RegistrationResult, register_model
from registry.verify import verify_model
from tests.deploy.conftest import Registry, make_registry, register_kwargs

pytestmark = [pytest.mark.faults, pytest.mark.integration]

_CHILD = """
import pickle, sys, time
from mlflow import MlflowClient
from registry import stage
from registry.stage import RegistrationRequest, register_model

kwargs, point = pickle.load(open(sys.argv[1], "rb"))

def stop_here():
    print("AT", point, flush=True)
    time.sleep(600)  # the test's signal lands here

def after(owner, name):
    real = getattr(owner, name)
    def wrapped(*args, **kwargs):
        out = real(*args, **kwargs)
        stop_here()
        return out
    setattr(owner, name, wrapped)

def before(owner, name):
    real = getattr(owner, name)
    def wrapped(*args, **kwargs):
        stop_here()
        return real(*args, **kwargs)
    setattr(owner, name, wrapped)

if point == "model_logged":  # the first log_artifacts call logs the model directory
    after(MlflowClient, "log_artifacts")
elif point == "version_created":
    after(stage.reg, "create_version")
elif point == "before_challenger":
    before(stage, "set_challenger")
register_model(RegistrationRequest(**kwargs))
print("REGISTERED", flush=True)
"""

POINTS = ("model_logged", "version_created", "before_challenger")


@pytest.fixture
def fault_registry(tmp_path: Path) -> Registry:
    """A store of its own per case: the registration runs of one digest are counted."""
    return make_registry(tmp_path / ".shipyard")


def _register(registry: Registry, model_dir: Path, name: str) -> RegistrationResult:
    return register_model(RegistrationRequest(**register_kwargs(registry, model_dir, name)))


def _verify(registry: Registry, uri: str, signer: str, digest: str) -> None:
    """Deploy's check (signature, provenance, eval attestation, tags) with the test key."""
    verify_model(uri, tracking_uri=registry.settings.mlflow_tracking_uri,
                 policy=Policy(allowed_builder_ids=("urn:shipyard:builder:flyte-local",),
                               required_eval_gate="PASS", trusted_key_fingerprints=(signer,)),
                 public_key=registry.settings.keys_dir / "signing.pub", expected_digest=digest)


def _start(registry: Registry, model_dir: Path, name: str, point: str, tmp_path: Path
           ) -> tuple[subprocess.Popen[str], Path]:
    args = tmp_path / "args.pkl"
    args.write_bytes(pickle.dumps((register_kwargs(registry, model_dir, name), point)))
    log = tmp_path / "child.log"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(args), point], cwd=PROJECT_ROOT, text=True,
        stdout=subprocess.PIPE, stderr=log.open("w"), start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    return child, log


def _wait_for_point(child: subprocess.Popen[str], point: str, log: Path) -> None:
    assert child.stdout is not None
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(child.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(timeout=240)
    assert line and line[0].strip() == f"AT {point}", \
        f"register never reached {point}: {line} {log.read_text()[-3000:]}"


def processes_in_group(pgid: int) -> list[int]:
    """Live processes whose process group is `pgid` (a stage started in its own session)."""
    found = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return found


def _versions_of(client: MlflowClient, name: str, digest: str) -> list[str]:
    versions = client.search_model_versions(
        f"name = '{name}' and tags.{TAG_MODEL_DIGEST} = '{digest}'")
    return sorted(str(v.version) for v in versions)


def _registration_runs(client: MlflowClient, digest: str) -> dict[str, str]:
    """run id -> status of every registration run of `digest`, in every experiment."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=(
        f"tags.`shipyard.stage` = 'register' and attributes.run_name = 'register-{digest[:12]}'"))
    return {r.info.run_id: r.info.status for r in runs}


# SIGKILL at every point; SIGTERM (the handler runs) where it matters most, mid-commit. Each
# case costs about 30 s on 2 busy cores, so the SIGTERM cases at the other points (measured
# passing once, see the closing note) are not repeated in CI.
@pytest.mark.parametrize(("point", "signum"), [
    *((point, signal.SIGKILL) for point in POINTS), ("version_created", signal.SIGTERM),
], ids=lambda value: value.name if isinstance(value, signal.Signals) else value)
def test_killed_register_leaves_nothing_that_looks_valid_and_converges(
        fault_registry: Registry, model_dirs: dict[str, Path], tmp_path: Path, point: str,
        signum: int) -> None:
    name = f"shipyard-register-{point}-{signal.Signals(signum).name}".replace("_", "-")
    client = client_for(fault_registry.settings.mlflow_tracking_uri)
    # an earlier version is the champion: a killed registration must never move it
    v1 = _register(fault_registry, model_dirs["stable"], name)
    move_champion(client, name, v1.version, expected_current=None)
    model_dir = model_dirs["canary"]
    digest = model_root_digest(model_dir)

    child, log = _start(fault_registry, model_dir, name, point, tmp_path)
    try:
        _wait_for_point(child, point, log)
        child.send_signal(signum)
        assert child.wait(timeout=120) != 0, "register finished instead of being stopped"
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert processes_in_group(child.pid) == [], "a process of the killed register is left"
    if signum == signal.SIGTERM:
        assert "StageInterrupted" in log.read_text()

    # what the kill left: no version, or a complete one that verifies; never an alias on it
    left = _versions_of(client, name, digest)
    assert len(left) == (0 if point == "model_logged" else 1), left
    for version in left:  # complete: it verifies as it is, and nothing picked it up yet
        _verify(fault_registry, f"models:/{name}/{version}", v1.signer, digest)
        assert alias_versions(client, name).get(CHALLENGER_ALIAS) != version
    runs = _registration_runs(client, digest)
    assert len(runs) == 1, runs
    expected_status = {"before_challenger": "FINISHED"}.get(
        point, "FAILED" if signum == signal.SIGTERM else "RUNNING")
    assert list(runs.values()) == [expected_status]
    assert alias_versions(client, name).get("champion") == v1.version

    # the re-run converges: one version of the digest, verified, challenger on it
    again = _register(fault_registry, model_dir, name)
    assert again.model_digest == digest and again.created == (not left)
    _verify(fault_registry, f"models:/{name}@{CHALLENGER_ALIAS}", again.signer, digest)
    assert _versions_of(client, name, digest) == [again.version]
    if left:
        assert again.version == left[0], "the re-run made a second version of the digest"
    # no registration run of the digest is left RUNNING: the re-run closed the killed one
    statuses = _registration_runs(client, digest)
    assert "RUNNING" not in statuses.values(), statuses
    if expected_status == "RUNNING":
        assert "KILLED" in statuses.values(), statuses
    # the description a kill after create_version left out is written by the re-run
    described = client.get_model_version(name, again.version).description or ""
    assert f"sha256:{digest}" in described and "shipyard verify" in described
    aliases = alias_versions(client, name)
    assert aliases.get(CHALLENGER_ALIAS) == again.version
    assert aliases.get("champion") == v1.version
