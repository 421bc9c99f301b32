"""`shipyard` without engines: argument parsing and exit codes of every command, status phases
from state / status files, history, gc --dry-run, reports, and the generated docs/cli.md."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from cli import docs, status
from cli.main import build_parser, main
from common.settings import load_settings
from deploy.operations import decision_records, previous_champion
from deploy.state import DeploymentState, ServerRecord
from testing.clock import FakeClock as Clock

pytestmark = pytest.mark.unit

COMMANDS = ("status", "promote", "abort", "pause", "resume", "undo", "history", "verify",
            "serve", "stop", "reports", "gc", "run")


@pytest.fixture
def home(isolated_home: Path) -> Path:
    return load_settings().home


def deployment(home: Path, name: str = "demo") -> Path:
    folder = home / "deployments" / name
    (folder / "records").mkdir(parents=True)
    return folder


# the thresholds a schema-1 record (the previous release's writer) holds
V1_THRESHOLDS = {"min_requests": 50, "max_ttft_p95_seconds": 1.0, "max_itl_p95_seconds": 0.2,
                 "max_error_rate": 0.01, "max_latency_ratio": 1.5,
                 "latency_slack_seconds": 0.05, "mann_whitney_alpha": 0.05}


def write_record(folder: Path, stamp: str, version: str, before: str | None, after: str,
                 action: str, outcome: str = "PASS", **extra: Any) -> None:
    """A decision record as the previous release wrote it (schema 1: still in users' folders,
    and read through the upgrade of deploy.decision_record_schema)."""
    record = {"schema_version": 1, "deployment": folder.name,
              "model_uri": f"models:/demo-model/{version}", "thresholds": V1_THRESHOLDS,
              "stable_before": None,
              "model_digest": f"d{version}", "started_at": stamp, "finished_at": stamp,
              "outcome": outcome, "action": action, "config": {"steps": [10, 50, 100]},
              "champion": {"before": before, "after": after, "moved": before != after},
              "steps": [], "timeline": [], "notes": [], **extra}
    (folder / "records" / f"{stamp}-v{version}.json").write_text(json.dumps(record))


# -- parsing and exit codes -------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_json(command: str, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: shipyard {command}")
    assert "--json" in out


@pytest.mark.parametrize("argv", [[], ["bogus"], ["status", "--timeout", "soon"],
                                  ["serve", "shipyard-tiny/3"], ["serve", "models:/x/latest"],
                                  ["run", "--set", "max_steps=3"], ["undo", "--to-version", "x"]])
def test_bad_usage_exits_2(argv: list[str], home: Path) -> None:
    assert main(argv) == 2


def test_unknown_deployment_exits_1(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 1
    assert "DEPLOY_NOT_FOUND" in capsys.readouterr().err
    assert main(["status", "nowhere", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "DEPLOY_NOT_FOUND"


def test_ambiguous_deployment_is_a_usage_error(home: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    deployment(home, "a"), deployment(home, "b")
    assert main(["history"]) == 2
    assert "several deployments, name one: a, b" in capsys.readouterr().err


def test_control_without_a_baking_canary_exits_1(home: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = deployment(home)
    for command in ("promote", "abort", "pause", "resume"):
        assert main([command, "demo"]) == 1
        assert "DEPLOY_NO_ROLLOUT" in capsys.readouterr().err
    assert not (folder / "control.json").exists()


def test_undo_without_records_or_previous_champion_exits_1(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deployment(home, "empty")
    assert main(["undo", "empty"]) == 1
    assert "DEPLOY_NOT_FOUND" in capsys.readouterr().err
    folder = deployment(home)
    write_record(folder, "20260101T000000", "1", None, "1", "first_deployment")
    # undo takes its target from the history: a record of a champion move without one means
    # the history was deleted, and undo fails closed rather than trust the unsigned record
    assert main(["undo", "demo"]) == 1
    assert "DEPLOY_HISTORY_MISSING" in capsys.readouterr().err
    from deploy.history import append_entry, write_anchor
    from registry.mlflow_registry import client_for

    other = deployment(home, "other")
    entry = append_entry(other, action="first_deployment", version="1", digest="d1",
                         decision_record_sha256=None, actor="test", key_pair=None)
    client = client_for(load_settings().mlflow_tracking_uri)
    client.create_registered_model("demo-model")
    assert write_anchor(client, "demo-model", "other", entry)
    write_record(other, "20260101T000000", "1", None, "1", "first_deployment")
    assert main(["undo", "other"]) == 1  # the history's only champion is the first one
    assert "DEPLOY_UNDO_NO_PREVIOUS" in capsys.readouterr().err


def test_run_builds_the_pyflyte_command() -> None:
    parser = build_parser(Path("/h"), {})
    args = parser.parse_args(["run", "--preset", "tiny", "--set", "train.max_steps=3",
                              "--set", "deploy.bake_seconds=2", "--remote"])
    from cli.housekeeping import pyflyte_command

    command = pyflyte_command(args)
    assert command[1:3] == ["run", "--remote"]
    assert command[3:7] == ["workflows/pipeline.py", "shipyard_pipeline", "--preset", "tiny"]
    assert json.loads(command[command.index("--overrides") + 1]) == [
        "train.max_steps=3", "deploy.bake_seconds=2"]


# -- status -------------------------------------------------------------------------------------
def server(role: str, version: str = "1", port: int = 9000) -> ServerRecord:
    return ServerRecord(role=role, kind="router" if role == "router" else "local", pid=1,
                        port=port, log_path="/dev/null", model_uri=f"models:/m/{version}",
                        model_version=version, model_digest=f"digest{version}")


def observed(*, canary: bool = False, running: bool = False, status_file: dict | None = None,
             record: dict | None = None, stable: bool = True,
             weights: dict[str, int] | None = None) -> status.Observed:
    state = DeploymentState("demo", router=server("router", port=8000),
                            stable=server("stable") if stable else None,
                            canary=server("canary", "2", 9001) if canary else None)
    return status.Observed(state, running, status_file, record, weights)


BAKING = {"phase": "Progressing", "step_index": 2, "steps_total": 3, "steps": [10, 50, 100],
          "set_weight": 50, "paused": False, "controls": [],
          "last_verdict": {"outcome": "PASS", "canary_percent": 10, "reasons": [],
                           "canary": {"requests": 60, "errors": 0, "ttft_p95_seconds": 0.04}}}


def test_status_progressing_shows_step_weights_versions_and_verdict() -> None:
    view = status.rollout_view("demo", observed(canary=True, running=True, status_file=BAKING,
                                                weights={"stable": 50, "canary": 50}))
    assert view["phase"] == "Progressing" and status.exit_code(view["phase"]) == 0
    assert view["step"]["index"] == 2 and view["step"]["total"] == 3
    assert (view["set_weight"], view["actual_weight"]) == (50, 50)
    assert view["stable"]["digest"] == "digest1" and view["canary"]["version"] == "2"
    assert view["endpoint"] == "http://127.0.0.1:8000/v1"
    assert view["last_verdict"]["canary"]["requests"] == 60
    text = status.render(view)
    assert "Step:        2/3" in text and "SetWeight:    50%" in text
    assert "ActualWeight: 50%" in text and "Analysis:    PASS at 10%" in text


def test_status_paused() -> None:
    view = status.rollout_view("demo", observed(canary=True, running=True,
                                                status_file={**BAKING, "paused": True}))
    assert view["phase"] == "Paused" and view["paused"] is True


def test_status_healthy_and_degraded_exit_codes() -> None:
    healthy = status.rollout_view("demo", observed(
        record=write_like("promoted"), weights={"stable": 100}))
    assert healthy["phase"] == "Healthy" and healthy["actual_weight"] == 0
    assert status.exit_code("Healthy") == 0
    rolled_back = status.rollout_view("demo", observed(record=write_like("rolled_back", "FAIL")))
    assert rolled_back["phase"] == "Degraded" and "rolled back" in rolled_back["message"]
    assert "ttft_p95: too slow" in rolled_back["message"]
    assert status.exit_code("Degraded") == 1
    left_canary = status.rollout_view("demo", observed(canary=True, running=False))
    assert left_canary["phase"] == "Degraded" and "interrupted" in left_canary["message"]
    nothing = status.rollout_view("demo", observed(stable=False))
    assert nothing["phase"] == "Degraded" and "stable" in nothing["message"]


def write_like(action: str, outcome: str = "PASS") -> dict[str, Any]:
    return {"action": action, "outcome": outcome, "model_uri": "models:/m/2",
            "config": {"steps": [10, 100]},
            "steps": [{"canary_percent": 10, "outcome": outcome,
                       "reasons": ["ttft_p95: too slow"] if outcome == "FAIL" else []}]}


def watch_args(**overrides: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"name": "demo", "watch": True, "timeout": 10.0,
                                 "interval": 2.0, "json": True, **overrides})


def test_watch_times_out_with_exit_3_while_progressing(
        home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    deployment(home)
    monkeypatch.setattr(status, "observe", lambda h, n: observed(
        canary=True, running=True, status_file=BAKING))
    clock = Clock()
    assert status.run_status(watch_args(), home, clock=clock, sleep=clock.sleep) == 3
    assert clock.now >= 10.0
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[0])["phase"] == "Progressing"  # one JSON document per change
    assert "timed out after 10.0s while Progressing" in lines[-1]


def test_watch_ends_when_the_rollout_ends(home: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    deployment(home)
    views = iter([observed(canary=True, running=True, status_file=BAKING),
                  observed(record=write_like("promoted"))])
    monkeypatch.setattr(status, "observe", lambda h, n: next(views))
    clock = Clock()
    assert status.run_status(watch_args(), home, clock=clock, sleep=clock.sleep) == 0
    phases = [json.loads(line)["phase"] for line in capsys.readouterr().out.splitlines()]
    assert phases == ["Progressing", "Healthy"]
    views = iter([observed(canary=True, running=True, status_file=BAKING),
                  observed(record=write_like("rolled_back", "FAIL"))])
    assert status.run_status(watch_args(), home, clock=clock, sleep=clock.sleep) == 1


def test_status_reads_a_stopped_deployment_from_disk(home: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = deployment(home)
    write_record(folder, "20260101T000000", "1", None, "1", "first_deployment")
    assert main(["status", "demo", "--json"]) == 1  # nothing serves any more: Degraded
    view = json.loads(capsys.readouterr().out)
    assert view["phase"] == "Degraded" and view["last_decision"]["action"] == "first_deployment"


# -- history ------------------------------------------------------------------------------------
def test_history_lists_champion_changes_with_who_acted(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = deployment(home)
    write_record(folder, "20260101T000000", "1", None, "1", "first_deployment")
    control = {"action": "abort", "actor": "ana@ci", "issued_at": "2026-01-02T00:00:01+00:00"}
    write_record(folder, "20260102T000000", "2", "1", "1", "rolled_back", "FAIL",
                 timeline=[{"t_seconds": 3.0, "canary_percent": 10, "control": control}])
    write_record(folder, "20260103T000000", "3", "1", "3", "promoted")
    (folder / "records" / "latest.json").write_text("{}")  # a copy, not an entry
    assert main(["history", "demo", "--json"]) == 0
    history = json.loads(capsys.readouterr().out)["history"]
    assert [(h["model_uri"][-1], h["action"]) for h in history] == [
        ("1", "first_deployment"), ("2", "rolled_back"), ("3", "promoted")]
    assert history[1]["controls"] == [control] and not history[1]["champion_moved"]
    assert (history[2]["champion_before"], history[2]["champion_after"]) == ("1", "3")
    assert main(["history", "demo"]) == 0
    text = capsys.readouterr().out
    assert "1 -> 3" in text and "abort by ana@ci" in text
    assert previous_champion(decision_records(folder).records, "3") == "1"
    assert previous_champion(decision_records(folder).records, "1") is None


def test_history_lists_a_tampered_record_as_invalid_and_exits_1(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Neither dropped from the audit trail nor a traceback: listed with its code, the records
    that load listed as always, exit status 1."""
    folder = deployment(home)
    write_record(folder, "20260101T000000", "1", None, "1", "first_deployment")
    write_record(folder, "20260102T000000", "2", "1", "2", "promoted",
                 champion={"before": "1", "after": "2", "moved": "certainly"})
    tampered = folder / "records" / "20260102T000000-v2.json"
    assert main(["history", "demo", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [h["model_uri"] for h in out["history"]] == ["models:/demo-model/1"]
    assert [(p["code"], p["record_path"]) for p in out["invalid_records"]] == [
        ("DEPLOY_RECORD_INVALID", str(tampered))]
    assert "champion.moved" in out["invalid_records"][0]["message"]
    assert main(["history", "demo"]) == 1
    text = capsys.readouterr().out
    assert f"DEPLOY_RECORD_INVALID: decision record {tampered}" in text
    assert "models:/demo-model/1" in text
    # `status` shows the newest record that loads as the last decision, and says that a newer
    # one does not load, in its JSON and its text, instead of only logging it
    main(["status", "demo", "--json"])
    view = json.loads(capsys.readouterr().out)
    assert view["last_decision"]["model_uri"] == "models:/demo-model/1"
    assert [p["record_path"] for p in view["invalid_records"]] == [str(tampered)]
    main(["status", "demo"])
    assert ("Records:     1 decision record(s) do not load (DEPLOY_RECORD_INVALID); "
            "`shipyard history demo` lists them") in capsys.readouterr().out


# -- gc and reports ----------------------------------------------------------------------------
def test_gc_dry_run_lists_unused_copies_and_stale_temp_dirs(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = deployment(home)
    for version in ("v1", "v2"):
        (folder / "models" / version / "model").mkdir(parents=True)
        (folder / "models" / version / "model" / "w.bin").write_bytes(b"x" * 2048)
    temp = tmp_path / "tmp"
    stale, fresh = temp / "shipyard-eval-old", temp / "shipyard-champion-new"
    for path in (stale, fresh, temp / "unrelated-old"):
        path.mkdir(parents=True)
        (path / "f").write_bytes(b"y" * 100)
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (day_ago, day_ago))
    os.utime(temp / "unrelated-old", (day_ago, day_ago))
    assert main(["gc", "--dry-run", "--temp-dir", str(temp), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    paths = sorted(Path(item["path"]).name for item in report["removed"])
    assert paths == ["shipyard-eval-old", "v1", "v2"]  # nothing runs: both copies unused
    assert report["bytes"] == 2 * 2048 + 100 and report["dry_run"] is True
    assert (folder / "models" / "v1").exists() and stale.exists()  # dry run: all still there
    assert main(["gc", "--temp-dir", str(temp)]) == 0
    assert "freed 4.1 KiB in 3 item(s)" in capsys.readouterr().out
    assert not (folder / "models" / "v1").exists() and not stale.exists() and fresh.exists()


def test_reports_lists_runs_newest_first_and_one_runs_files(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for run, age in (("run-old", 100), ("run-new", 0)):
        folder = home / "reports" / run
        folder.mkdir(parents=True)
        (folder / "train.html").write_text("<html>")
        stamp = time.time() - age
        os.utime(folder, (stamp, stamp))
    assert main(["reports", "--json"]) == 0
    assert [r["run"] for r in json.loads(capsys.readouterr().out)["runs"]] == [
        "run-new", "run-old"]
    assert main(["reports", "run-old"]) == 0
    assert capsys.readouterr().out.strip().endswith("run-old/train.html")
    assert main(["reports", "missing"]) == 1


# -- the generated reference ------------------------------------------------------------------
def test_docs_cli_md_is_fresh() -> None:
    page = docs.CLI_PAGE.read_text()
    assert docs.render(page) == page, "docs/cli.md is stale: run .venv/bin/python -m cli.docs"
    for command in COMMANDS:
        assert f"### `shipyard {command}`" in page
    assert "/root" not in page and str(Path.home()) not in page  # machine-independent
