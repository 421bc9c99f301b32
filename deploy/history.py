"""Who moved the champion, and when: an append-only, hash-chained, signed deployment history
whose head is anchored outside the file.

`<SHIPYARD_HOME>/deployments/<name>/history.jsonl`, one JSON object per line:

    {"entry": {deployment, sequence, action, version, digest, decision_record_sha256, time,
               actor, previous_sha256},
     "entry_sha256": sha256 of the entry's canonical JSON (sorted keys, no spaces),
     "signature": a DSSE envelope over those canonical bytes (payload type PAYLOAD_TYPE),
                  signed with the registry's key pair; null when no key pair exists}

What refuses what (`read_history`):
- `previous_sha256` chains each line to the one before: an edited, removed or reordered line
  breaks it (DEPLOY_HISTORY_BROKEN);
- `sequence` (1, 2, ...) and `deployment` are inside the signed entry: a skipped or repeated
  number, or a line signed for another deployment (a history copied in from one), is
  refused (DEPLOY_HISTORY_BROKEN);
- once the registry's public key exists every line must carry a valid signature, whatever
  the first line does: a rewrite without the private key is refused
  (DEPLOY_HISTORY_UNSIGNED, DEPLOY_HISTORY_BROKEN);
- the head (last sequence number and entry digest) is also written as a tag on the
  registered model in MLflow (`anchor_tag`), outside the file: a history cut short, replaced
  by an older copy, or whose anchor is gone is refused (DEPLOY_HISTORY_TRUNCATED,
  DEPLOY_HISTORY_UNANCHORED);
- a missing file once the anchor or a decision record of a champion move exists is refused
  (DEPLOY_HISTORY_MISSING);
- a last line cut by a crash mid-write is DEPLOY_HISTORY_TORN, and `repair_history`
  (`python -m deploy.history repair NAME`) moves the torn bytes aside after checking
  everything before them and the anchor.

Lines written before sequence numbers existed (no `deployment`/`sequence` keys) still load
as a prefix, checked by their chain and signature as before; every line after them is of
the new form.

Writers hold the deployment lock (deploy/state.py `deployment_lock`): appends never interleave.

Modules: history_lines.py (an entry, its signature and the checks of every line, the key
pair), history_anchor.py (the head in MLflow), history_repair.py (cutting a torn line, the
`repair` command); this module reads and appends, answers who is champion, records an imported
base model, and keeps the public API. The action names are deploy/outcomes.py's.

Action `imported`: the base model was imported into the registry and made the first champion
(`import_base_as_champion`); it has no decision record, since nothing was served or judged.
"""


from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import StageError
from common.fs import fsync_dir, private_dir
from common.redact import redact_text
from deploy.history_anchor import (
    ANCHOR_TAG_PREFIX,
    Anchor,
    anchor_tag,
    check_anchor,
    read_anchor,
    write_anchor,
)
from deploy.history_lines import (
    HISTORY_FILE,
    PAYLOAD_TYPE,
    HistoryEntry,
    HistoryHead,
    check_lines,
    head_of,
    history_keys,
    history_path,
    split_lines,
    torn_error,
)
from deploy.history_repair import TORN_SUFFIX, Repair, main, repair_history
from deploy.outcomes import CHAMPION_ACTIONS, RECORDED_ACTIONS, HistoryAction
from deploy.state import deployment_lock, state_path
from registry.dsse import sign_envelope
from registry.signing import KeyPair

if TYPE_CHECKING:  # the import machinery (MLflow, model signing) loads when it is used
    from common.settings import Settings
    from registry.imports import ImportRequest, ImportResult

# The public API, wherever each part now lives.
__all__ = ["ANCHOR_TAG_PREFIX", "CHAMPION_ACTIONS", "HISTORY_FILE", "PAYLOAD_TYPE",
           "RECORDED_ACTIONS", "TORN_SUFFIX", "Anchor", "HistoryAction", "HistoryEntry",
           "HistoryHead", "Repair", "anchor_tag", "append_entry", "champion_versions",
           "current_champion", "head_of", "history_keys", "history_path",
           "import_base_as_champion", "main", "read_anchor", "read_history", "repair_history",
           "write_anchor"]


def append_entry(
    work_dir: Path,
    *,
    action: HistoryAction,
    version: str,
    digest: str,
    decision_record_sha256: str | None,
    actor: str,
    key_pair: KeyPair | None,
    public_key_path: Path | None = None,
    anchor: Anchor | None = None,
) -> HistoryEntry:
    """Verify the history so far (against `anchor` when given), then append one entry, signed
    when `key_pair` is given, chained to its last line. The caller then records the new
    head in the anchor store (`write_anchor`)."""
    if public_key_path is None and key_pair is not None:
        public_key_path = key_pair.public_key_path
    entries = _read(work_dir, public_key_path, anchor, pending_record=decision_record_sha256)
    entry = HistoryEntry(
        action=action, version=str(version), digest=digest,
        decision_record_sha256=decision_record_sha256,
        time=datetime.now(UTC).isoformat(), actor=redact_text(actor),
        previous_sha256=entries[-1].sha256 if entries else None,
        deployment=Path(work_dir).name, sequence=len(entries) + 1,
    )
    signature = (sign_envelope(entry.canonical(), PAYLOAD_TYPE, key_pair)
                 if key_pair is not None else None)
    line = json.dumps({"entry": asdict(entry), "entry_sha256": entry.sha256,
                       "signature": signature}, sort_keys=True)
    path = history_path(work_dir)
    private_dir(path.parent)
    created = not path.exists()
    # One write of the whole line, fsynced: a crash leaves at most a torn last line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)
    return entry


def read_history(work_dir: Path, *, public_key_path: Path | None = None,
                 anchor: Anchor | None = None) -> list[HistoryEntry]:
    """Every entry, oldest first, after checking the chain, the sequence and deployment of
    each line, (with `public_key_path`) that every line is validly signed, and (with
    `anchor`) that the history reaches the anchored head. [] when there is no history yet.
    Raises DEPLOY_HISTORY_BROKEN / _UNSIGNED / _TORN / _TRUNCATED / _UNANCHORED / _MISSING."""
    return _read(work_dir, public_key_path, anchor, pending_record=None)


def _read(work_dir: Path, public_key_path: Path | None, anchor: Anchor | None, *,
          pending_record: str | None) -> list[HistoryEntry]:
    # `pending_record`: the sha256 of the decision record whose line is being appended (it
    # is written first, so it exists before the deployment's first line does).
    path = history_path(work_dir)
    if not path.is_file():
        _check_nothing_expected(work_dir, anchor, pending_record)
        return []
    lines, torn = split_lines(path.read_bytes())
    if torn is not None:
        raise torn_error(path, len(lines) + 1)
    entries = check_lines(path, lines, Path(work_dir).name, public_key_path)
    check_anchor(path, entries, anchor)
    return entries


def champion_versions(entries: Sequence[HistoryEntry]) -> set[str]:
    """Versions the history says were ever made the champion."""
    return {e.version for e in entries if e.action in CHAMPION_ACTIONS}


def current_champion(entries: Sequence[HistoryEntry]) -> str | None:
    """The version the last champion-moving entry names; None without one."""
    moves = [e for e in entries if e.action in CHAMPION_ACTIONS]
    return moves[-1].version if moves else None


def import_base_as_champion(
    request: ImportRequest, settings: Settings, deployment_name: str | None = None,
    *, actor: str | None = None,
) -> tuple[ImportResult, HistoryEntry | None]:
    """Import a base model (registry.imports) and record it in the deployment's history when
    it is the champion and the history does not say so yet: then `deploy` accepts it
    (`deploy.session.check_champion_in_history`). Returns the import and the entry written
    (None: none).

    Under the deployment lock, so no deploy moves the alias meanwhile. A deployment whose
    history already records a champion keeps it: the import then only registers the version
    (the alias is never set over a recorded champion, even one whose alias was removed).
    `deployment_name` is deploy's (`deploy.deployment_name`, else the registered model)."""
    import dataclasses
    import getpass
    import socket

    from registry.imports import import_base_model
    from registry.mlflow_registry import client_for

    name = deployment_name or request.config.registered_model_name
    work_dir = state_path(settings.home, name).parent
    registered = request.config.registered_model_name
    client = client_for(settings.mlflow_tracking_uri)
    with deployment_lock(work_dir, name):
        anchor = read_anchor(client, registered, name)
        entries = read_history(work_dir, public_key_path=history_keys(settings)[1],
                               anchor=anchor)
        recorded = current_champion(entries)
        result = import_base_model(dataclasses.replace(
            request, make_champion=request.make_champion and recorded is None))
        # Recorded only into a history without a champion: the alias naming the import then
        # was set by this call or by an earlier one that died before writing this line. Any
        # other alias move onto it happened outside Shipyard, and deploy refuses it.
        if recorded is not None or not result.is_champion:
            return result, None
        # The keys after the import: on a fresh home the import generated them, and a
        # history that starts unsigned could never be signed later.
        key_pair, public_key = history_keys(settings)
        entry = append_entry(
            work_dir, action="imported", version=result.version, digest=result.model_digest,
            decision_record_sha256=None,
            actor=actor or f"{getpass.getuser()}@{socket.gethostname()}",
            key_pair=key_pair, public_key_path=public_key, anchor=anchor)
        write_anchor(client, registered, name, entry)
    return result, entry


def _check_nothing_expected(work_dir: Path, anchor: Anchor | None,
                            pending_record: str | None) -> None:
    """A missing history is a new deployment only while nothing says one existed."""
    path = history_path(work_dir)
    moves = _recorded_moves(Path(work_dir), ignore_sha256=pending_record)
    if (anchor is None or anchor.head is None) and not moves:
        return
    evidence = (f"the registry anchors entry {anchor.head.sequence}" if anchor and anchor.head
                else f"{len(moves)} decision records of champion moves exist, e.g. {moves[0]}")
    raise StageError(
        "DEPLOY_HISTORY_MISSING",
        f"deployment history {path} is missing but {evidence}: it was deleted. Nothing was "
        "deployed. Restore it from a backup; a history is never started over silently.",
        details={"path": str(path)})


def _recorded_moves(work_dir: Path, *, ignore_sha256: str | None) -> list[str]:
    records = work_dir / "records"
    found = []
    for path in sorted(records.glob("*.json")) if records.is_dir() else []:
        if path.name == "latest.json":
            continue
        try:
            raw = path.read_bytes()
            if hashlib.sha256(raw).hexdigest() == ignore_sha256:
                continue
            action = json.loads(raw).get("action")
        except (OSError, ValueError, AttributeError):
            continue  # not a record this check can read; the history check does not need it
        if action in RECORDED_ACTIONS:
            found.append(path.name)
    return found


if __name__ == "__main__":
    raise SystemExit(main())
