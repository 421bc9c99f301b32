"""Acting on a canary while it bakes: the control file is authenticated by owner and mode, and
the canary controller obeys promote / abort / pause / resume within one scrape interval, with
who acted recorded on the timeline (and so in the decision record)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.errors import StageError
from deploy.config import DeployConfig
from deploy.control import (
    CONTROL_FILE,
    current_actor,
    read_status,
    take_control,
    write_control,
)
from deploy.controller import CanaryController, RolloutReport
from tests.deploy.test_analysis import FakeClock, RecordingTraffic, ScriptedSource

pytestmark = pytest.mark.unit

CONFIG = DeployConfig(steps=[10, 50, 100], bake_seconds=10, min_requests=5,
                      scrape_interval_seconds=1.0, max_extra_bake_seconds=5)


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "deployments" / "demo"
    folder.mkdir(parents=True)
    return folder


# -- the control file ---------------------------------------------------------------------------
def test_control_file_is_private_and_names_the_actor(work_dir: Path) -> None:
    command = write_control(work_dir, "pause")
    path = work_dir / CONTROL_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(work_dir.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["actor"] == current_actor() == command.actor
    assert "@" in command.actor
    taken = take_control(work_dir)
    assert taken == command and not path.exists()  # consumed: obeyed once
    assert take_control(work_dir) is None


def test_group_or_world_writable_control_file_is_refused(work_dir: Path) -> None:
    write_control(work_dir, "abort")
    os.chmod(work_dir / CONTROL_FILE, 0o666)
    with pytest.raises(StageError) as caught:
        take_control(work_dir)
    assert caught.value.code == "DEPLOY_CONTROL_REFUSED"
    assert "lets others write it" in caught.value.message
    assert not (work_dir / CONTROL_FILE).exists()  # removed: reported once, never obeyed


def test_control_file_of_another_user_is_refused(work_dir: Path) -> None:
    write_control(work_dir, "abort")
    path = work_dir / CONTROL_FILE
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)  # nobody
        uid = None
    else:  # without root, ask for a uid the file is not owned by
        uid = os.geteuid() + 1
    with pytest.raises(StageError) as caught:
        take_control(work_dir, uid=uid)
    assert caught.value.code == "DEPLOY_CONTROL_REFUSED"
    assert "owned by uid" in caught.value.message


def test_symlinked_control_file_is_refused(work_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"action": "abort"}))
    (work_dir / CONTROL_FILE).symlink_to(target)
    with pytest.raises(StageError) as caught:
        take_control(work_dir)
    assert caught.value.code == "DEPLOY_CONTROL_REFUSED"


def test_writing_into_someone_elses_deployment_is_refused(work_dir: Path) -> None:
    with pytest.raises(StageError) as caught:
        write_control(work_dir, "promote", uid=os.geteuid() + 1)
    assert caught.value.code == "DEPLOY_CONTROL_REFUSED"
    assert not (work_dir / CONTROL_FILE).exists()


# -- the controller obeys ---------------------------------------------------------------------
def rollout(work_dir: Path, at: dict[float, Callable[[], object]],
            seen: dict[float, Any] | None = None) -> tuple[RolloutReport, RecordingTraffic]:
    """Run the controller on the fake clock; at fake time t, call at[t]() (e.g. a command
    written by `shipyard pause`) and record the published status in seen[t]."""
    clock = FakeClock()
    traffic = RecordingTraffic()

    def sleep(seconds: float) -> None:
        if clock.now in at:
            at[clock.now]()
        if seen is not None:
            seen[clock.now] = read_status(work_dir)
        clock.sleep(seconds)

    source = ScriptedSource(clock, {"stable": (10, 0.04), "canary": (2, 0.04)})
    controller = CanaryController(traffic, source, CONFIG, clock=clock, sleep=sleep,
                                  work_dir=work_dir)
    return controller.run(), traffic


def controls(report: RolloutReport) -> list[dict[str, Any]]:
    return [p["control"] | {"t": p["t_seconds"]} for p in report.timeline if "control" in p]


def test_without_commands_the_rollout_publishes_its_progress(work_dir: Path) -> None:
    seen: dict[float, Any] = {}
    report, traffic = rollout(work_dir, {}, seen)
    assert report.outcome == "PASS" and traffic.weights == [10, 50, 100]
    assert seen[5.0]["phase"] == "Progressing" and seen[5.0]["step_index"] == 1
    assert seen[5.0]["set_weight"] == 10 and seen[5.0]["steps_total"] == 3
    assert seen[15.0]["last_verdict"]["outcome"] == "PASS"  # step 1's verdict, in step 2
    final = read_status(work_dir)
    assert final is not None and final["phase"] == "Succeeded" and final["pid"] == os.getpid()


def test_promote_ends_the_step_within_one_interval(work_dir: Path) -> None:
    report, traffic = rollout(work_dir, {2.0: lambda: write_control(work_dir, "promote")})
    assert report.outcome == "PASS" and traffic.weights == [10, 50, 100]
    first = report.steps[0]
    assert first.ended_seconds == 3.0  # written at t=2, obeyed at the next scrape (t=3)
    assert first.analysis.outcome == "PASS"
    assert first.analysis.reasons[0].startswith(f"promoted to the next step by {current_actor()}")
    assert first.analysis.checks  # the measured numbers stay on record
    [event] = controls(report)
    assert (event["action"], event["actor"], event["t"]) == ("promote", current_actor(), 3.0)


def test_promote_full_goes_straight_to_100_and_passes(work_dir: Path) -> None:
    report, traffic = rollout(work_dir, {2.0: lambda: write_control(work_dir, "promote_full")})
    assert report.outcome == "PASS"
    assert traffic.weights == [10, 100] and len(report.steps) == 1
    assert "promoted to 100 %" in report.steps[0].analysis.reasons[0]
    assert read_status(work_dir)["phase"] == "Succeeded"  # type: ignore[index]


def test_abort_fails_the_rollout_within_one_interval(work_dir: Path) -> None:
    report, traffic = rollout(work_dir, {12.0: lambda: write_control(work_dir, "abort")})
    assert report.outcome == "FAIL"  # the stage rolls the canary back on FAIL
    assert traffic.weights == [10, 50]
    assert report.steps[-1].ended_seconds == 13.0
    assert report.steps[-1].analysis.reasons[0].startswith(f"aborted by {current_actor()}")
    assert [e["action"] for e in controls(report)] == ["abort"]
    assert read_status(work_dir)["phase"] == "Failed"  # type: ignore[index]


def test_pause_holds_the_weight_and_stops_the_bake_clock_until_resume(work_dir: Path) -> None:
    seen: dict[float, Any] = {}
    report, traffic = rollout(work_dir, {2.0: lambda: write_control(work_dir, "pause"),
                                         7.0: lambda: write_control(work_dir, "resume")}, seen)
    assert report.outcome == "PASS" and traffic.weights == [10, 50, 100]
    assert seen[4.0]["phase"] == "Paused" and seen[4.0]["paused"] is True
    assert seen[4.0]["set_weight"] == 10
    assert seen[9.0]["phase"] == "Progressing"
    # paused from t=3 to t=8 (obeyed one interval after each command): 5 s off the clock
    assert report.steps[0].ended_seconds == 15.0
    assert [(e["action"], e["t"]) for e in controls(report)] == [("pause", 3.0), ("resume", 8.0)]
    assert all(e["actor"] == current_actor() for e in controls(report))


def test_a_refused_control_file_is_noted_and_not_obeyed(work_dir: Path) -> None:
    def planted() -> None:
        write_control(work_dir, "abort")
        os.chmod(work_dir / CONTROL_FILE, 0o622)

    report, _ = rollout(work_dir, {2.0: planted})
    assert report.outcome == "PASS"
    refused = [p["control_refused"] for p in report.timeline if "control_refused" in p]
    assert [r["code"] for r in refused] == ["DEPLOY_CONTROL_REFUSED"]
    assert controls(report) == []


def test_a_command_from_before_the_rollout_is_ignored(work_dir: Path) -> None:
    write_control(work_dir, "abort", now=1.0)  # left over from 1970, e.g. a killed deploy
    report, _ = rollout(work_dir, {})
    assert report.outcome == "PASS"
    ignored = [p["control_ignored"] for p in report.timeline if "control_ignored" in p]
    assert [i["action"] for i in ignored] == ["abort"]
