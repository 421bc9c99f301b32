"""Who moved the champion, and when: an append-only, hash-chained, signed deployment history.

`<SHIPYARD_HOME>/deployments/<name>/history.jsonl`, one JSON object per line:

    {"entry": {action, version, digest, decision_record_sha256, time, actor,
               previous_sha256},
     "entry_sha256": sha256 of the entry's canonical JSON (sorted keys, no spaces),
     "signature": a DSSE envelope over those canonical bytes (payload type PAYLOAD_TYPE),
                  signed with the registry's key pair; null when no key pair exists}

`previous_sha256` is the previous line's `entry_sha256` (None on the first line), so removing,
reordering or editing a line breaks the chain; the signature makes rewriting the whole chain
need the registry's private key. A history whose first line is signed must be signed on every
line (stripping signatures is tampering too). `read_history` checks all of it and raises
StageError DEPLOY_HISTORY_BROKEN naming the first bad line.

Writers hold the deployment lock (deploy/stage.py `deployment_lock`): appends never interleave.

Action `imported`: the base model was imported into the registry and made the first champion
(`import_base_as_champion`); it has no decision record, since nothing was served or judged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from common.errors import StageError
from common.redact import redact_text
from registry.dsse import sign_envelope, verify_envelope
from registry.errors import RegistryError
from registry.signing import KeyPair

if TYPE_CHECKING:  # the import machinery (MLflow, model signing) loads when it is used
    from common.settings import Settings
    from registry.imports import ImportRequest, ImportResult

HISTORY_FILE = "history.jsonl"
PAYLOAD_TYPE = "application/vnd.shipyard.deployment-history+json"
HistoryAction = Literal["promoted", "rolled_back", "first_deployment", "undo", "served",
                        "imported"]
# Actions after which the champion alias names the entry's version.
CHAMPION_ACTIONS = ("promoted", "first_deployment", "undo", "served", "imported")


@dataclass(frozen=True)
class HistoryEntry:
    action: str
    version: str
    # model-signing root digest of that version (hex)
    digest: str
    # sha256 of the decision record file written for this deploy (None for an undo without one)
    decision_record_sha256: str | None
    # ISO 8601, UTC
    time: str
    # who acted: user@host, or the orchestrator's execution id
    actor: str
    previous_sha256: str | None

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


def history_path(work_dir: Path) -> Path:
    """The history of the deployment whose directory is `work_dir`
    (`<SHIPYARD_HOME>/deployments/<name>`)."""
    return Path(work_dir) / HISTORY_FILE


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
) -> HistoryEntry:
    """Verify the history so far, then append one signed entry chained to its last line."""
    entries = read_history(work_dir, public_key_path=public_key_path)
    entry = HistoryEntry(
        action=action, version=str(version), digest=digest,
        decision_record_sha256=decision_record_sha256,
        time=datetime.now(UTC).isoformat(), actor=redact_text(actor),
        previous_sha256=entries[-1].sha256 if entries else None,
    )
    signature = (sign_envelope(entry.canonical(), PAYLOAD_TYPE, key_pair)
                 if key_pair is not None else None)
    line = json.dumps({"entry": asdict(entry), "entry_sha256": entry.sha256,
                       "signature": signature}, sort_keys=True)
    path = history_path(work_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return entry


def read_history(work_dir: Path, *, public_key_path: Path | None = None) -> list[HistoryEntry]:
    """Every entry, oldest first, after checking the chain and (with `public_key_path`) each
    signature; [] when there is no history yet. DEPLOY_HISTORY_BROKEN on any break."""
    path = history_path(work_dir)
    if not path.is_file():
        return []
    entries: list[HistoryEntry] = []
    signed_chain: bool | None = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        entry, signature = _parse(path, number, line)
        previous = entries[-1].sha256 if entries else None
        if entry.previous_sha256 != previous:
            raise _broken(path, number, "its previous_sha256 is not the digest of the line "
                          "before it: a line was removed, reordered or edited",
                          expected=previous, found=entry.previous_sha256)
        if signed_chain is None:
            signed_chain = signature is not None
        if signed_chain and signature is None:
            raise _broken(path, number, "it is unsigned in a signed history")
        if signature is not None and public_key_path is not None:
            _check_signature(path, number, entry, signature, public_key_path)
        entries.append(entry)
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
    (`_check_champion_in_history`). Returns the import and the entry written (None: none).

    Under the deployment lock, so no deploy moves the alias meanwhile. A deployment whose
    history already records a champion keeps it: the import then only registers the version
    (the alias is never set over a recorded champion, even one whose alias was removed).
    `deployment_name` is deploy's (`deploy.deployment_name`, else the registered model)."""
    import dataclasses
    import getpass
    import socket

    from deploy.stage import _history_keys, deployment_lock
    from deploy.state import state_path
    from registry.imports import import_base_model

    name = deployment_name or request.config.registered_model_name
    work_dir = state_path(settings.home, name).parent
    with deployment_lock(work_dir, name):
        key_pair, public_key = _history_keys(settings)
        entries = read_history(work_dir, public_key_path=public_key)
        recorded = current_champion(entries)
        result = import_base_model(dataclasses.replace(
            request, make_champion=request.make_champion and recorded is None))
        # Recorded only into a history without a champion: the alias naming the import then
        # was set by this call or by an earlier one that died before writing this line. Any
        # other alias move onto it happened outside Shipyard, and deploy refuses it.
        if recorded is not None or not result.is_champion:
            return result, None
        entry = append_entry(
            work_dir, action="imported", version=result.version, digest=result.model_digest,
            decision_record_sha256=None,
            actor=actor or f"{getpass.getuser()}@{socket.gethostname()}",
            key_pair=key_pair, public_key_path=public_key)
    return result, entry


def _parse(path: Path, number: int, line: str) -> tuple[HistoryEntry, dict[str, Any] | None]:
    try:
        raw = json.loads(line)
        entry = HistoryEntry(**raw["entry"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _broken(path, number, f"it is not a history entry ({exc})") from exc
    if raw.get("entry_sha256") != entry.sha256:
        raise _broken(path, number, "its content does not match its digest: it was edited",
                      expected=entry.sha256, found=raw.get("entry_sha256"))
    signature = raw.get("signature")
    return entry, signature if isinstance(signature, dict) else None


def _check_signature(path: Path, number: int, entry: HistoryEntry,
                     signature: dict[str, Any], public_key_path: Path) -> None:
    try:
        payload = verify_envelope(signature, public_key_path, PAYLOAD_TYPE,
                                  check="deployment_history")
    except RegistryError as exc:
        raise _broken(path, number, f"its signature does not verify: {exc.message}") from exc
    if payload != entry.canonical():
        raise _broken(path, number, "its signature is over another entry")


def _broken(path: Path, number: int, why: str, *, expected: str | None = None,
            found: str | None = None) -> StageError:
    detail = "" if expected is None and found is None else f" (expected {expected}, found {found})"
    return StageError(
        "DEPLOY_HISTORY_BROKEN",
        f"deployment history {path} line {number}: {why}{detail}. The history is append-only "
        "evidence of who moved the champion: nothing was deployed. Restore the file from a "
        "backup (or the decision records in the same directory), then deploy again.",
        details={"path": str(path), "line": number},
    )
