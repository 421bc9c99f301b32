"""`python -m deploy.cli status|stop [NAME]`: see and stop what local deploys left
running (router, stable, canary), from `<SHIPYARD_HOME>/deployments/<name>/state.json`.

Kept for scripts that call it; `shipyard status|stop` (cli/, docs/cli.md) replaces it with
phases, weights and verdicts. (deploy/ cannot import cli/, so this stays a small module.)

Exit codes: 0 done; 1 nothing to show or stop for a named deployment; 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys

from common.settings import load_settings
from deploy.local_backend import LocalBackend
from deploy.state import list_deployments, load_state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("status", "stop"):
        sub = commands.add_parser(command)
        sub.add_argument("name", nargs="?", help="deployment name (default: all)")
    args = parser.parse_args(argv)
    home = load_settings().home
    names = [args.name] if args.name else list_deployments(home, with_state_only=True)
    if not names:
        print("no local deployments")
        return 0
    status = 0
    for name in names:
        state = load_state(home, name)
        if args.command == "status":
            servers = {r.role: {"url": r.base_url, "pid": r.pid, "kind": r.kind,
                                "model_uri": r.model_uri, "log": r.log_path}
                       for r in state.servers()}
            print(json.dumps({"deployment": name, "running": servers}, indent=2))
            if args.name and not servers:
                status = 1
        else:
            stopped = LocalBackend(home, name, engine_kind="local").stop_all()
            for record in stopped:
                print(f"stopped {name} {record.role} (pid {record.pid}, port {record.port})")
            if args.name and not stopped:
                print(f"{name}: nothing running")
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
