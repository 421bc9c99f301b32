"""`shipyard promote|abort|pause|resume|undo|history|serve|stop`: acting on a deployment.

The deploy stack (MLflow, the engines) is imported inside the commands that use it, so that
importing this module (every `shipyard --help`) stays cheap: tests/cli/test_import_cost.py.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import (
    FAILED,
    NOTHING_TO_SHOW,
    OK,
    UsageError,
    print_json,
    print_json_error,
    resolve_name,
    work_dir,
)
from common.errors import StageError
from common.settings import Settings
from deploy.control import ControlAction, deploy_in_progress, write_control
from deploy.state import load_state

if TYPE_CHECKING:
    from deploy.config import DeployConfig
    from deploy.decision_record_schema import RecordFile
    from deploy.operations import ManualDeploy


# -- promote / abort / pause / resume ----------------------------------------------------------
def run_control(args: argparse.Namespace, home: Path) -> int:
    name = resolve_name(home, args.name)
    folder = work_dir(home, name)
    action: ControlAction = "promote_full" if getattr(args, "full", False) else args.command
    state = load_state(home, name)
    if state.canary is None or not deploy_in_progress(folder):
        raise StageError("DEPLOY_NO_ROLLOUT",
                         f"deployment {name!r} has no canary baking (no running deploy holds "
                         "a canary): nothing to promote, abort, pause or resume. "
                         "`shipyard status` shows where it stands.")
    command = write_control(folder, action)
    result = {"deployment": name, "action": action, "actor": command.actor,
              "issued_at": command.issued_at, "canary": state.canary.model_uri,
              "note": "the controller obeys at its next scrape interval"}
    if args.json:
        print_json(result)
    else:
        print(f"shipyard {args.command}: {action} of {state.canary.model_uri} on {name} "
              f"requested by {command.actor}; the controller acts within one scrape interval "
              "(`shipyard status --watch` follows it)")
    return OK


# -- undo / serve ------------------------------------------------------------------------------
def deploy_config(args: argparse.Namespace, name: str | None) -> DeployConfig:
    from deploy.config import DeployConfig

    return DeployConfig(engine=getattr(args, "engine", "auto"), deployment_name=name,
                        engine_ready_timeout_seconds=args.ready_timeout)


def run_undo(args: argparse.Namespace, settings: Settings) -> int:
    from deploy.operations import undo

    name = resolve_name(settings.home, args.name)
    with _progress_to_stderr(args.json):
        done = undo(name, deploy_config(args, name), settings,
                    to_version=None if args.to_version is None else str(args.to_version))
    _report_manual(args, done)
    return OK


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from deploy.operations import serve_version

    registered, version = parse_model_uri(args.model_uri)
    with _progress_to_stderr(args.json):
        done = serve_version(registered, version, deploy_config(args, args.name), settings)
    _report_manual(args, done)
    return OK


def _progress_to_stderr(json_output: bool) -> contextlib.AbstractContextManager[Any]:
    """With --json, stdout carries only the JSON document: progress lines go to stderr."""
    return contextlib.redirect_stdout(sys.stderr) if json_output else contextlib.nullcontext()


def parse_model_uri(uri: str) -> tuple[str, str]:
    """models:/NAME/VERSION -> (NAME, VERSION): serve takes a version, never a moving alias."""
    from registry.errors import RegistryError
    from registry.model_uri import ModelUri

    try:
        parsed = ModelUri.parse(uri)
    except RegistryError as exc:
        raise UsageError(f"{uri!r}: give models:/NAME/VERSION, e.g. models:/shipyard-tiny/3"
                         ) from exc
    if parsed.version is None:
        raise UsageError(f"{uri!r}: give models:/NAME/VERSION with a numeric version")
    return parsed.name, parsed.version


def _report_manual(args: argparse.Namespace, done: ManualDeploy) -> None:
    result = {"action": done.action, "model_uri": done.model_uri,
              "model_digest": done.model_digest, "champion_before": done.champion_before,
              "champion_after": done.champion_after, "endpoint": f"{done.endpoint}/v1",
              "decision_record": str(done.record_path)}
    if args.json:
        print_json(result)
        return
    print(f"shipyard {args.command}: {done.model_uri} (sha256:{done.model_digest}) serves as "
          f"the stable\n  endpoint:  {done.endpoint}/v1\n  champion:  {done.champion_before} "
          f"-> {done.champion_after}\n  decision:  {done.record_path}")


# -- history -----------------------------------------------------------------------------------
def history_entries(records: list[RecordFile]) -> list[dict[str, Any]]:
    entries = []
    for loaded in records:
        record = loaded.record
        champion = record.champion
        # timeline points and steps are the controller's JSON (deploy/controller.py)
        controls = [p["control"] for p in record.timeline if "control" in p]
        entries.append({
            "finished_at": record.finished_at or record.started_at,
            "model_uri": record.model_uri,
            "model_digest": record.model_digest,
            "outcome": record.outcome,
            "action": record.action,
            "champion_before": champion.before if champion else None,
            "champion_after": champion.after if champion else None,
            "champion_moved": bool(champion and champion.moved),
            "steps": [{"canary_percent": s.get("canary_percent"), "outcome": s.get("outcome"),
                       "reasons": s.get("reasons")} for s in record.steps],
            "controls": [{"action": c.get("action"), "actor": c.get("actor"),
                          "issued_at": c.get("issued_at")} for c in controls],
            "notes": record.notes,
            "record_path": str(loaded.path),
        })
    return entries


def run_history(args: argparse.Namespace, home: Path) -> int:
    """A record that does not load (DEPLOY_RECORD_INVALID: edited, truncated, or from a newer
    release) is listed as such, with the rest, and the exit status is 1: it never silently
    drops out of the audit trail, and it never hides the records that do load."""
    from deploy.operations import decision_records

    name = resolve_name(home, args.name)
    listing = decision_records(work_dir(home, name))
    entries = history_entries(listing.records)
    invalid = listing.invalid_rows()
    status = FAILED if invalid or not entries else OK
    if args.json:
        if not entries and not invalid:
            print_json_error(NOTHING_TO_SHOW, f"no decision records for {name!r}",
                             deployment=name, history=[])
        else:
            print_json({"deployment": name, "history": entries, "invalid_records": invalid})
        return status
    for problem in invalid:
        print(f"shipyard history: {problem['code']}: {problem['message']}")
    if not entries:
        if not invalid:
            print(f"shipyard history: no decision records for {name!r}")
        return FAILED
    print(f"{'FINISHED':<27} {'MODEL':<34} {'ACTION':<17} {'OUTCOME':<13} CHAMPION")
    for entry in entries:
        moved = (f"{entry['champion_before']} -> {entry['champion_after']}"
                 if entry["champion_moved"] else f"{entry['champion_after']} (unchanged)")
        print(f"{str(entry['finished_at'])[:26]:<27} {entry['model_uri']!s:<34} "
              f"{entry['action']!s:<17} {entry['outcome']!s:<13} {moved}")
        for control in entry["controls"]:
            print(f"{'':<27}   {control['action']} by {control['actor']} at "
                  f"{control['issued_at']}")
        print(f"{'':<27}   record: {entry['record_path']}")
    return status


# -- stop --------------------------------------------------------------------------------------
def run_stop(args: argparse.Namespace, home: Path) -> int:
    from deploy.local_backend import LocalBackend
    from deploy.state import list_deployments

    names = [args.name] if args.name else list_deployments(home)
    stopped_all: list[dict[str, Any]] = []
    status = OK
    for name in names:
        stopped = LocalBackend(home, name, engine_kind="local").stop_all()
        stopped_all += [{"deployment": name, "role": r.role, "pid": r.pid, "port": r.port}
                        for r in stopped]
        if args.name and not stopped:
            status = FAILED
    if args.json and status == FAILED:
        print_json_error(NOTHING_TO_SHOW, f"{args.name}: nothing running", stopped=stopped_all)
    elif args.json:
        print_json({"stopped": stopped_all})
    else:
        for item in stopped_all:
            print(f"stopped {item['deployment']} {item['role']} (pid {item['pid']}, "
                  f"port {item['port']})")
        if not stopped_all:
            print(f"{args.name}: nothing running" if args.name else "no local deployments")
    return status
