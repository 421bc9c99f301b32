"""Repairing a deployment history whose last line a crash cut short (deploy/history.py), and
its command line: `python -m deploy.history repair NAME`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.errors import StageError
from common.fs import atomic_write_bytes
from deploy.history_anchor import Anchor, check_anchor, read_anchor
from deploy.history_lines import (
    HistoryHead,
    check_lines,
    head_of,
    history_keys,
    history_path,
    split_lines,
)

TORN_SUFFIX = ".torn"


@dataclass(frozen=True)
class Repair:
    path: Path
    entries: int  # complete, verified lines kept
    torn_bytes: int  # bytes moved aside (0: nothing was torn)
    torn_copy: Path | None  # where they were kept
    head: HistoryHead | None


def repair_history(work_dir: Path, *, public_key_path: Path | None = None,
                   anchor: Anchor | None = None) -> Repair:
    """Cut a torn last line (a write interrupted by a crash) off the history, after checking
    every line before it and that they still reach the anchored head: a torn line was never
    a complete entry, so nothing recorded is lost. The torn bytes are kept beside the file
    (`history.jsonl.torn`). Anything else that is wrong is raised, not repaired."""
    path = history_path(work_dir)
    if not path.is_file():
        raise StageError("DEPLOY_HISTORY_MISSING",
                         f"deployment history {path} does not exist: nothing to repair.")
    raw = path.read_bytes()
    lines, torn = split_lines(raw)
    entries = check_lines(path, lines, Path(work_dir).name, public_key_path)
    check_anchor(path, entries, anchor)
    if torn is None:
        return Repair(path, len(entries), 0, None, head_of(entries))
    copy = path.with_name(path.name + TORN_SUFFIX)
    atomic_write_bytes(copy, torn)
    atomic_write_bytes(path, raw[: len(raw) - len(torn)])
    return Repair(path, len(entries), len(torn), copy, head_of(entries))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m deploy.history repair NAME [--registered-model M]`."""
    import argparse

    from common.settings import load_settings
    from registry.mlflow_registry import client_for

    parser = argparse.ArgumentParser(prog="python -m deploy.history")
    parser.add_argument("command", choices=["repair"])
    parser.add_argument("deployment")
    parser.add_argument("--registered-model", default=None,
                        help="the registered model whose tag anchors the head (default: the "
                             "deployment name)")
    args = parser.parse_args(argv)
    settings = load_settings()
    work_dir = settings.layout.deployment_dir(args.deployment)
    anchor = read_anchor(client_for(settings.mlflow_tracking_uri),
                         args.registered_model or args.deployment, args.deployment)
    try:
        repair = repair_history(work_dir, public_key_path=history_keys(settings)[1],
                                anchor=anchor)
    except StageError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{repair.path}: {repair.entries} verified entries; "
          + (f"{repair.torn_bytes} torn bytes moved to {repair.torn_copy}"
             if repair.torn_copy else "nothing torn"))
    return 0

