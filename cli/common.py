"""What every `shipyard` subcommand shares: exit codes, finding the deployment, printing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from common.errors import StageError
from deploy.state import deployments_dir, list_deployments, state_path

# Exit codes (docs/cli.md): scripts branch on these.
OK = 0
FAILED = 1  # degraded, failed, refused, or not found
USAGE = 2  # bad arguments (argparse uses 2 as well)
TIMEOUT = 3  # --timeout passed before the rollout finished


class UsageError(Exception):
    """What the user typed cannot be acted on; exit 2."""


def resolve_name(home: Path, name: str | None) -> str:
    """`name`, or the only deployment there is; a UsageError when that is ambiguous."""
    if name:
        return name
    names = list_deployments(home)
    if len(names) == 1:
        return names[0]
    if not names:
        raise StageError("DEPLOY_NOT_FOUND", f"no deployments under {deployments_dir(home)}")
    raise UsageError(f"several deployments, name one: {', '.join(names)}")


def work_dir(home: Path, name: str) -> Path:
    return state_path(home, name).parent


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str), flush=True)


# Codes of the JSON error object for failures that are no StageError (the others carry theirs).
USAGE_ERROR = "USAGE"
NOTHING_TO_SHOW = "NOT_FOUND"


def print_json_error(code: str, message: str, **context: Any) -> None:
    """With --json, a failure is a JSON document on stdout too, so a script that parses stdout
    gets an object it can branch on (`error.code`) instead of empty input."""
    print_json({**context, "error": {"code": code, "message": message}})


def error(command: str, message: str) -> None:
    print(f"shipyard {command}: {message}", file=sys.stderr, flush=True)
