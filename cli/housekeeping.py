"""`shipyard reports|gc|run`: the files a pipeline leaves, and running the pipeline."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli.common import (
    FAILED,
    NOTHING_TO_SHOW,
    OK,
    UsageError,
    print_json,
    print_json_error,
)
from common.fs import directory_bytes
from common.html import format_bytes
from common.settings import PROJECT_ROOT, Settings
from deploy.state import deployments_dir, list_deployments, load_state

STALE_TEMP_SECONDS = 24 * 3600
TEMP_PREFIXES = ("shipyard-eval-", "shipyard-champion-")


# -- reports -----------------------------------------------------------------------------------
def run_reports(args: argparse.Namespace, settings: Settings) -> int:
    root = settings.reports_dir
    runs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime,
                  reverse=True) if root.is_dir() else []
    if args.run is None:
        listing: list[dict[str, Any]] = [
            {"run": p.name, "path": str(p), "files": sum(1 for f in p.rglob("*") if f.is_file()),
             "modified": _iso(p.stat().st_mtime)} for p in runs]
        if args.json:
            print_json({"reports_dir": str(root), "runs": listing})
        elif not listing:
            print(f"no reports under {root}")
        else:
            for item in listing:
                print(f"{item['modified'][:19]}  {item['run']:<40} {item['files']:>3} files  "
                      f"{item['path']}")
        return OK
    folder = root / args.run
    if not folder.is_dir() or args.run in ("", ".", "..") or "/" in args.run:
        message = f"no run {args.run!r} under {root}"
        if args.json:
            print_json_error(NOTHING_TO_SHOW, message, run=args.run)
        print(f"shipyard reports: {message}", file=sys.stderr)
        return FAILED
    files = sorted(str(f) for f in folder.rglob("*") if f.is_file())
    if args.json:
        print_json({"run": args.run, "path": str(folder), "files": files})
    else:
        print("\n".join(files) if files else f"{folder}: empty")
    return OK


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


# -- gc ----------------------------------------------------------------------------------------
def _deployment_garbage(home: Path, name: str) -> list[dict[str, Any]]:
    """What gc may take from one deployment (its deploy lock held): model copies no running
    track uses, and an engine a killed deploy left starting."""
    folder = deployments_dir(home) / name
    state = load_state(home, name)
    found: list[dict[str, Any]] = []
    if state.starting is not None:  # load_state checked it is still that engine
        found.append({"path": f"pid {state.starting.pid}", "process": state.starting.pid,
                      "why": f"engine of deployment {name} left starting by an interrupted "
                             f"deploy (port {state.starting.port}, {state.starting.model_uri})",
                      "bytes": 0})
    models = folder / "models"
    if not models.is_dir():
        return found
    in_use = [Path(r.model_dir).resolve() for r in (state.stable, state.canary)
              if r is not None and r.model_dir]
    for copy in sorted(models.iterdir()):
        resolved = copy.resolve()
        if any(resolved == used or resolved in used.parents for used in in_use):
            continue
        found.append({"path": str(copy), "why": f"model copy of deployment {name} that "
                      "no running stable or canary uses", "bytes": directory_bytes(copy)})
    return found


def _stale_temp_dirs(temp_dir: Path, now: float) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for prefix in TEMP_PREFIXES:
        for path in sorted(temp_dir.glob(f"{prefix}*")):
            with contextlib.suppress(OSError):
                age = now - path.stat().st_mtime
                if path.is_dir() and not path.is_symlink() and age > STALE_TEMP_SECONDS:
                    found.append({"path": str(path), "why": f"temp dir {age / 3600:.0f} h old",
                                  "bytes": directory_bytes(path)})
    return found


def _remove(home: Path, name: str | None, item: dict[str, Any]) -> None:
    if "process" in item:
        from deploy.local_backend import LocalBackend

        assert name is not None
        LocalBackend(home, name, engine_kind="local").stop_orphan()
        return
    path = Path(item["path"])
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def collect_garbage(home: Path, temp_dir: Path, now: float, *, dry_run: bool
                    ) -> tuple[list[dict[str, Any]], list[str]]:
    """Find and (unless `dry_run`) remove or stop what `garbage` lists. Each deployment is
    looked at and cleaned while holding its deploy lock (deploy.state.deployment_lock), so a
    deploy never starts in the middle (it gets DEPLOY_LOCKED for that moment) and gc never
    touches a deployment a deploy holds: those are skipped, and returned by name."""
    from common.errors import StageError
    from deploy.state import deployment_lock

    items: list[dict[str, Any]] = []
    skipped: list[str] = []
    for name in list_deployments(home):
        folder = deployments_dir(home) / name
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(deployment_lock(folder, name))
            except StageError as exc:
                if exc.code != "DEPLOY_LOCKED":
                    raise
                skipped.append(name)  # a deploy may be verifying into models/ right now
                continue
            found = _deployment_garbage(home, name)
            for item in found if not dry_run else []:
                _remove(home, name, item)
            items += found
    for item in _stale_temp_dirs(temp_dir, now):
        if not dry_run:
            _remove(home, None, item)
        items.append(item)
    return items, skipped


def run_gc(args: argparse.Namespace, settings: Settings) -> int:
    temp_dir = Path(args.temp_dir) if args.temp_dir else Path(tempfile.gettempdir())
    items, skipped = collect_garbage(settings.home, temp_dir, time.time(),
                                     dry_run=args.dry_run)
    freed = sum(item["bytes"] for item in items)
    verb = "would free" if args.dry_run else "freed"
    if args.json:
        print_json({"dry_run": args.dry_run, "removed": items, "bytes": freed,
                    "skipped_deploying": skipped})
    else:
        for name in skipped:
            print(f"skipped deployment {name}: a deploy of it is in progress")
        for item in items:
            action = "stop" if "process" in item else "remove"
            done = "stopped" if "process" in item else "removed"
            print(f"{'would ' + action if args.dry_run else done} {item['path']} "
                  f"({format_bytes(item['bytes'])}): {item['why']}")
        print(f"shipyard gc: {verb} {format_bytes(freed)} in {len(items)} item(s)")
    return OK


# -- run ---------------------------------------------------------------------------------------
# pyflyte's local runs log each task as it starts; these lines (and ours) make the condensed
# console. Everything else goes only to the log file.
_KEEP = re.compile(r"\[shipyard\]|Running Execution|execution|Error|error|Traceback|FAILED|"
                   r"\[[A-Z_]+\]|https?://")


def pyflyte_command(args: argparse.Namespace) -> list[str]:
    pyflyte = Path(sys.executable).with_name("pyflyte")
    command = [str(pyflyte) if pyflyte.exists() else "pyflyte", "run"]
    if args.remote:
        command.append("--remote")
    preset = args.preset
    if Path(preset).suffix in (".yaml", ".yml") and Path(preset).exists():
        preset = str(Path(preset).resolve())  # pyflyte runs from the project root
    command += ["workflows/pipeline.py", "shipyard_pipeline", "--preset", preset]
    for item in args.set or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UsageError(f"--set {item!r}: write SECTION.FIELD=VALUE, e.g. "
                             "train.max_steps=20")
    if args.set:
        command += ["--overrides", json.dumps(args.set)]
    return command


def run_pipeline(args: argparse.Namespace, settings: Settings) -> int:
    command = pyflyte_command(args)
    log_dir = settings.layout.logs_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"run-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.log"
    print(f"shipyard run: {' '.join(command)}\nshipyard run: full output in {log_path}",
          flush=True)
    with log_path.open("w") as log, subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1) as process:
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if args.verbose or _KEEP.search(line):
                print(line.rstrip()[:300], flush=True)
    status = process.returncode
    print(f"shipyard run: pyflyte exited {status}; full output in {log_path}", flush=True)
    return OK if status == 0 else FAILED
