"""`shipyard serve`, `status`, `undo` and `history` on real local engines and a real signed
registry: the previous champion is verified, served as the stable, and gets the alias back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.main import main
from deploy.state import load_state, state_path
from tests.deploy.conftest import Registry
from tests.deploy.scenarios import champion, deploy, fast_config, stop_everything

pytestmark = pytest.mark.integration
MODEL = "shipyard-cli-undo"


@pytest.fixture
def stopped(registry: Registry) -> Iterator[Registry]:
    yield registry
    stop_everything(registry.settings, MODEL)


def test_serve_then_undo_brings_back_the_previous_champion(
        stopped: Registry, model_dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = stopped.settings
    v1 = stopped.register(model_dirs["stable"], MODEL)
    first = deploy(v1, fast_config("local", deployment_name=MODEL), settings)
    assert first.action == "first_deployment"
    v2 = stopped.register(model_dirs["canary"], MODEL)  # evaluated against the champion v1
    capsys.readouterr()

    assert main(["serve", f"models:/{MODEL}/{v2.version}", "--engine", "local", "--json"]) == 0
    served = json.loads(capsys.readouterr().out)
    assert (served["champion_before"], served["champion_after"]) == (v1.version, v2.version)
    assert champion(settings, MODEL) == v2.version
    assert load_state(settings.home, MODEL).stable.model_version == v2.version  # type: ignore[union-attr]

    assert main(["status", MODEL, "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["phase"] == "Healthy" and view["stable"]["digest"] == v2.model_digest
    assert view["actual_weight"] == 0 and view["endpoint"].endswith("/v1")

    assert main(["undo", MODEL, "--json"]) == 0
    undone = json.loads(capsys.readouterr().out)
    assert undone["action"] == "undo" and undone["champion_after"] == v1.version
    assert undone["model_digest"] == v1.model_digest  # verified before it was served
    assert champion(settings, MODEL) == v1.version
    assert load_state(settings.home, MODEL).stable.model_version == v1.version  # type: ignore[union-attr]

    assert main(["history", MODEL, "--json"]) == 0
    history = json.loads(capsys.readouterr().out)["history"]
    assert [(h["action"], h["champion_after"]) for h in history] == [
        ("first_deployment", v1.version), ("served", v2.version), ("undo", v1.version)]

    assert main(["stop", MODEL]) == 0
    assert "stopped" in capsys.readouterr().out
    assert main(["status", MODEL, "--json"]) == 1  # nothing serves: Degraded


def test_undo_takes_its_target_from_the_signed_history_not_a_forged_record(
        stopped: Registry, model_dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Decision records are unsigned JSON: one written into the records folder that says the
    champion moved from v3 (a valid, signed version that never was champion) to v2 must not
    make undo serve v3. The signed history says v1 came before v2."""
    settings = stopped.settings
    v1 = stopped.register(model_dirs["stable"], MODEL)
    deploy(v1, fast_config("local", deployment_name=MODEL), settings)
    v2 = stopped.register(model_dirs["canary"], MODEL)
    assert main(["serve", f"models:/{MODEL}/{v2.version}", "--engine", "local", "--json"]) == 0
    v3 = stopped.register(model_dirs["slow"], MODEL)  # signed and passed, never the champion
    records = state_path(settings.home, MODEL).parent / "records"
    # a well-formed record (schema 2, loads as any other): only its champion move is a lie
    forged = json.loads((records / "latest.json").read_text())
    forged["champion"] = {"before": v3.version, "after": v2.version, "moved": True,
                          "moved_at": forged["finished_at"]}
    (records / "99991231T000000000000-v2.json").write_text(json.dumps(forged))
    capsys.readouterr()

    assert main(["undo", MODEL, "--to-version", v3.version]) == 1
    assert "DEPLOY_UNDO_NOT_A_CHAMPION" in capsys.readouterr().err
    assert main(["undo", MODEL, "--json"]) == 0
    undone = json.loads(capsys.readouterr().out)
    assert (undone["champion_after"], undone["model_digest"]) == (v1.version, v1.model_digest)
    assert champion(settings, MODEL) == v1.version
