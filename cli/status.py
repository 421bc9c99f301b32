"""`shipyard status [NAME] [--watch] [--timeout SECONDS] [--json]`: where a deployment stands.

The phase is computed from what is on disk and what runs:

  Progressing  a deploy holds the deployment's lock (a canary bakes, or a stable starts)
  Paused       a canary bakes and `shipyard pause` holds it
  Healthy      router and stable serve, no canary, and the last rollout was not rolled back
  Degraded     nothing serves; a canary was left by an interrupted deploy; or the last rollout
               was rolled back (FAIL / INCONCLUSIVE / aborted) — until the next deploy

The step and set weight come from the controller's `rollout-status.json`, the actual weight from
the router's admin API (authenticated with the deployment's token), the versions and digests
from `state.json`, the last verdict from the status file or the newest decision record.
A decision record that does not load (DEPLOY_RECORD_INVALID) leaves the phase as it is; the
last decision is then the newest record that loads, and the view says newer ones do not
(`invalid_records` in --json, a `Records:` line); `shipyard history` lists them.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import (
    FAILED,
    OK,
    TIMEOUT,
    print_json,
    print_json_error,
    resolve_name,
    work_dir,
)
from common.errors import StageError
from deploy.control import deploy_in_progress, read_status
from deploy.outcomes import RolledBack
from deploy.state import load_state

if TYPE_CHECKING:
    from deploy.state import DeploymentState, ServerRecord

TERMINAL_PHASES = ("Healthy", "Degraded")
# The decision record's action of a refused canary, typed by its owner (deploy/outcomes.py).
ROLLED_BACK: RolledBack = "rolled_back"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observed:
    """Everything `rollout_view` judges, read beforehand (so the judgement is a pure function)."""

    state: DeploymentState
    deploy_running: bool
    status: dict[str, Any] | None  # rollout-status.json
    latest_record: dict[str, Any] | None
    router_weights: dict[str, int] | None  # the router's actual table; None: not reachable
    router_error: str | None = None
    # decision records that do not load (DEPLOY_RECORD_INVALID): the "last decision" above is
    # then the newest record that does, and the view says so instead of only logging it
    invalid_records: list[dict[str, Any]] = field(default_factory=list)


def rollout_view(name: str, seen: Observed) -> dict[str, Any]:
    state, record, status = seen.state, seen.latest_record, seen.status
    phase, message = _phase(seen)
    rollout_live = state.canary is not None and seen.deploy_running and status is not None
    if rollout_live:
        assert status is not None
        step = {"index": status.get("step_index"), "total": status.get("steps_total"),
                "weights": status.get("steps")}
        set_weight = status.get("set_weight")
        verdict = status.get("last_verdict")
    else:
        steps = (record or {}).get("steps") or []
        planned = ((record or {}).get("config") or {}).get("steps") or []
        step = {"index": len(steps), "total": len(planned), "weights": planned}
        set_weight = 0 if state.canary is None else None
        verdict = _verdict_from_record(record)
    actual = None
    if seen.router_weights is not None:
        total = sum(seen.router_weights.values())
        actual = round(100 * seen.router_weights.get("canary", 0) / total) if total else 0
    return {
        "deployment": name,
        "phase": phase,
        "message": message,
        "step": step,
        "set_weight": set_weight,
        "actual_weight": actual,
        "router_weights": seen.router_weights,
        "router_error": seen.router_error,
        "paused": bool(rollout_live and status and status.get("paused")),
        "stable": _track(state.stable),
        "canary": _track(state.canary),
        "endpoint": f"{state.router.base_url}/v1" if state.router else None,
        "last_verdict": verdict,
        "controls": (status or {}).get("controls", []) if rollout_live else [],
        "invalid_records": seen.invalid_records,
        "last_decision": None if record is None else {
            "outcome": record.get("outcome"), "action": record.get("action"),
            "model_uri": record.get("model_uri"), "finished_at": record.get("finished_at"),
            "record_path": record.get("record_path")},
    }


def _phase(seen: Observed) -> tuple[str, str]:
    state, record = seen.state, seen.latest_record
    if state.canary is not None:
        if not seen.deploy_running:
            return "Degraded", (f"canary v{state.canary.model_version} was left by an "
                                "interrupted deploy; the next deploy rolls it back")
        if seen.status and seen.status.get("paused"):
            return "Paused", "canary held by `shipyard pause`; `shipyard resume` continues"
        return "Progressing", "canary baking"
    if seen.deploy_running:
        return "Progressing", "a deploy is running (stable starting or deciding)"
    if state.stable is None or state.router is None:
        missing = [r for r in ("router", "stable") if getattr(state, r) is None]
        return "Degraded", f"nothing serves: no live {' or '.join(missing)}"
    if record is not None and record.get("action") == ROLLED_BACK:
        reasons = "; ".join(((record.get("steps") or [{}])[-1]).get("reasons", []))
        return "Degraded", (f"the last rollout ({record.get('model_uri')}) was rolled back "
                            f"({record.get('outcome')}: {reasons}); the stable serves")
    return "Healthy", "stable serving, no canary"


def _track(record: ServerRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"model_uri": record.model_uri, "version": record.model_version,
            "digest": record.model_digest, "url": record.base_url, "pid": record.pid,
            "kind": record.kind}


def _verdict_from_record(record: dict[str, Any] | None) -> dict[str, Any] | None:
    steps = (record or {}).get("steps") or []
    return dict(steps[-1]) if steps else None


def observe(home: Path, name: str) -> Observed:
    # Imported here, not at the top: deploy.operations pulls in MLflow (seconds), which
    # `shipyard --help` must not pay for (tests/cli/test_import_cost.py).
    from deploy.local_backend import LocalBackend
    from deploy.operations import decision_records

    folder = work_dir(home, name)
    state = load_state(home, name)
    listing = decision_records(folder)
    for problem in listing.invalid:
        logger.warning("%s", problem)
    records = listing.records
    # the view reads the newest record's JSON, with where it lies
    latest = ({**records[-1].record.to_dict(), "record_path": str(records[-1].path)}
              if records else None)
    weights, router_error = None, None
    if state.router is not None:
        try:
            backend = LocalBackend(home, name, engine_kind="local")
            table = backend.admin_client().get("state").get("weights") or {}
            weights = {str(k): int(v) for k, v in table.items()}
        except (StageError, OSError, ValueError) as exc:
            router_error = str(exc)
    return Observed(state, deploy_in_progress(folder), read_status(folder),
                    latest, weights, router_error, listing.invalid_rows())


def found(home: Path, name: str, seen: Observed) -> bool:
    return bool(seen.state.servers() or seen.latest_record or work_dir(home, name).is_dir())


def render(view: dict[str, Any]) -> str:
    lines = [f"Name:        {view['deployment']}",
             f"Status:      {_symbol(view['phase'])} {view['phase']} — {view['message']}"]
    step = view["step"]
    if step.get("total"):
        lines.append(f"Step:        {step['index']}/{step['total']}  (weights {step['weights']})")
    actual = view["actual_weight"]
    lines.append(f"SetWeight:   {_pct(view['set_weight'])}")
    lines.append(f"ActualWeight:{_pct(actual)}"
                 + (f"  (router: {view['router_error']})" if view["router_error"] else ""))
    for role in ("stable", "canary"):
        track = view[role]
        if track:
            lines.append(f"{role.capitalize() + ':':<13}{track['model_uri']}  "
                         f"sha256:{str(track['digest'])[:16]}…  ({track['kind']}, {track['url']})")
    lines.append(f"Endpoint:    {view['endpoint'] or '-'}")
    verdict = view["last_verdict"]
    if verdict:
        canary = verdict.get("canary") or {}
        lines.append(f"Analysis:    {verdict.get('outcome')} at {verdict.get('canary_percent')}% "
                     f"— requests {canary.get('requests')}, errors {canary.get('errors')}, "
                     f"ttft p95 {_seconds(canary.get('ttft_p95_seconds'))}, "
                     f"itl p95 {_seconds(canary.get('itl_p95_seconds'))}")
        for reason in verdict.get("reasons") or []:
            lines.append(f"             {reason}")
    for control in view["controls"]:
        lines.append(f"Control:     {control['action']} by {control['actor']} "
                     f"at {control['issued_at']}")
    invalid = view.get("invalid_records") or []
    if invalid:
        lines.append(f"Records:     {len(invalid)} decision record(s) do not load "
                     f"({invalid[0]['code']}); `shipyard history {view['deployment']}` lists "
                     "them")
    return "\n".join(lines)


def _symbol(phase: str) -> str:
    return {"Healthy": "✔", "Progressing": "◌", "Paused": "॥", "Degraded": "✖"}.get(phase, "?")


def _pct(value: Any) -> str:
    return " -" if value is None else f" {value}%"


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}s"


def exit_code(phase: str) -> int:
    return FAILED if phase == "Degraded" else OK


def run_status(args: argparse.Namespace, home: Path, *,
               clock: Any = time.monotonic, sleep: Any = time.sleep) -> int:
    name = resolve_name(home, args.name)
    seen = observe(home, name)
    if not found(home, name, seen):
        message = f"deployment {name!r} not found under {home}"
        print_json_error("DEPLOY_NOT_FOUND", message, deployment=name) if args.json else \
            print(f"shipyard status: {message}")
        return FAILED
    view = rollout_view(name, seen)
    watch = args.watch or args.timeout is not None
    if not watch:
        print_json(view) if args.json else print(render(view))
        return exit_code(view["phase"])
    deadline = None if args.timeout is None else clock() + args.timeout
    shown = None
    while True:
        key = (view["phase"], view["step"].get("index"), view["set_weight"],
               view["actual_weight"], len(view["controls"]))
        if key != shown:
            shown = key
            if args.json:  # one JSON document per line and per change
                print(json.dumps(view, default=str), flush=True)
            else:
                print(render(view) + "\n", flush=True)
        if view["phase"] in TERMINAL_PHASES:
            return exit_code(view["phase"])
        if deadline is not None and clock() >= deadline:
            print(f"shipyard status: timed out after {args.timeout}s while {view['phase']}",
                  flush=True)
            return TIMEOUT
        sleep(args.interval)
        view = rollout_view(name, observe(home, name))
