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

Action `imported`: the base model was imported into the registry and made the first champion
(`import_base_as_champion`); it has no decision record, since nothing was served or judged.
"""


from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import StageError
from common.fs import atomic_write_bytes, fsync_dir, private_dir
from common.redact import redact_text
from deploy.outcomes import CHAMPION_ACTIONS, RECORDED_ACTIONS, HistoryAction
from deploy.state import deployment_lock, state_path
from registry.dsse import sign_envelope, verify_envelope
from registry.errors import RegistryError
from registry.signing import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME, KeyPair

if TYPE_CHECKING:  # the import machinery (MLflow, model signing) loads when it is used
    from common.settings import Settings
    from registry.imports import ImportRequest, ImportResult

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
TORN_SUFFIX = ".torn"
PAYLOAD_TYPE = "application/vnd.shipyard.deployment-history+json"
ANCHOR_TAG_PREFIX = "shipyard.history_head."


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
    # the deployment this line belongs to, and its line number (1, 2, ...): both signed, so
    # a line cannot be copied into another deployment's history or moved within one.
    # None only on lines written before they existed (read as a prefix, see `read_history`).
    deployment: str | None = None
    sequence: int | None = None

    def canonical(self) -> bytes:
        fields = asdict(self)
        if self.sequence is None:  # an older line: its digest and signature cover these keys
            del fields["deployment"], fields["sequence"]
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


@dataclass(frozen=True)
class HistoryHead:
    """The last line of a history: what the anchor outside the file records."""

    sequence: int
    entry_sha256: str

    def tag_value(self) -> str:
        return f"{self.sequence}:{self.entry_sha256}"

    @classmethod
    def from_tag(cls, value: str) -> HistoryHead | None:
        number, _, digest = value.partition(":")
        return cls(int(number), digest) if number.isdigit() and len(digest) == 64 else None


@dataclass(frozen=True)
class Anchor:
    """What the anchor store said: `head` None means it holds no head for this deployment
    (the anchor was looked up; pass no Anchor at all to skip the check)."""

    head: HistoryHead | None


def history_path(work_dir: Path) -> Path:
    """The history of the deployment whose directory is `work_dir`
    (`<SHIPYARD_HOME>/deployments/<name>`)."""
    return Path(work_dir) / HISTORY_FILE


def head_of(entries: Sequence[HistoryEntry]) -> HistoryHead | None:
    return HistoryHead(len(entries), entries[-1].sha256) if entries else None


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
    lines, torn = _split_lines(path.read_bytes())
    if torn is not None:
        raise _torn(path, len(lines) + 1)
    entries = _check_lines(path, lines, Path(work_dir).name, public_key_path)
    _check_anchor(path, entries, anchor)
    return entries


def champion_versions(entries: Sequence[HistoryEntry]) -> set[str]:
    """Versions the history says were ever made the champion."""
    return {e.version for e in entries if e.action in CHAMPION_ACTIONS}


def current_champion(entries: Sequence[HistoryEntry]) -> str | None:
    """The version the last champion-moving entry names; None without one."""
    moves = [e for e in entries if e.action in CHAMPION_ACTIONS]
    return moves[-1].version if moves else None


# -- the anchor: the head, outside the file ---------------------------------------------------
def anchor_tag(deployment: str) -> str:
    """The registered-model tag that holds a deployment's history head."""
    return ANCHOR_TAG_PREFIX + deployment


def read_anchor(client: Any, registered_model: str, deployment: str) -> Anchor:
    """The head MLflow records for the deployment (Anchor(None) when none is recorded, or the
    registered model does not exist yet). A tag that is not a head reads as none: the
    history then has to match nothing, which fails closed once the history is anchored."""
    from mlflow.exceptions import MlflowException

    try:
        tags = dict(client.get_registered_model(registered_model).tags)
    except MlflowException:
        return Anchor(None)
    value = tags.get(anchor_tag(deployment))
    return Anchor(HistoryHead.from_tag(str(value)) if value is not None else None)


def write_anchor(client: Any, registered_model: str, deployment: str,
                 entry: HistoryEntry) -> bool:
    """Record `entry` (just appended) as the deployment's head; False when MLflow could not
    be reached. The entry is on disk and signed by then, and a history ahead of its anchor
    still reads (the anchored entry must match): an outage here costs only the protection
    of the newest line until the next deploy writes the head again."""
    from mlflow.exceptions import MlflowException

    assert entry.sequence is not None  # appended by this version: always numbered
    try:
        client.set_registered_model_tag(registered_model, anchor_tag(deployment),
                                        HistoryHead(entry.sequence, entry.sha256).tag_value())
    except MlflowException as exc:
        logger.error("could not anchor the history head of %s in MLflow: %s", deployment, exc)
        return False
    return True


# -- repair ---------------------------------------------------------------------------------
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
    lines, torn = _split_lines(raw)
    entries = _check_lines(path, lines, Path(work_dir).name, public_key_path)
    _check_anchor(path, entries, anchor)
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


def _split_lines(raw: bytes) -> tuple[list[str], bytes | None]:
    """The complete lines, and the bytes after the last newline when a write was cut short
    (None when the file ends with a newline, as every append leaves it)."""
    complete, newline, tail = raw.rpartition(b"\n")
    text = (complete + newline).decode("utf-8", "replace")
    return text.splitlines(), (tail if tail else None)


def _check_lines(path: Path, lines: list[str], deployment: str,
                 public_key_path: Path | None) -> list[HistoryEntry]:
    entries: list[HistoryEntry] = []
    for number, line in enumerate(lines, start=1):
        entry, signature = _parse(path, number, line)
        _check_place(path, number, entry, entries, deployment)
        if public_key_path is not None:
            if signature is None:
                raise _unsigned(path, number, public_key_path)
            _check_signature(path, number, entry, signature, public_key_path)
        entries.append(entry)
    if public_key_path is None:
        _check_signatures_consistent(path, lines)
    return entries


def _check_place(path: Path, number: int, entry: HistoryEntry,
                 before: list[HistoryEntry], deployment: str) -> None:
    previous = before[-1].sha256 if before else None
    if entry.previous_sha256 != previous:
        raise _broken(path, number, "its previous_sha256 is not the digest of the line "
                      "before it: a line was removed, reordered or edited",
                      expected=previous, found=entry.previous_sha256)
    if entry.sequence is None:
        if before and before[-1].sequence is not None:
            raise _broken(path, number, "it has no sequence number after numbered lines "
                          "(only lines written before numbering existed may lack one)")
        return
    if entry.sequence != number:
        raise _broken(path, number, "its sequence number is not its position: lines were "
                      "removed, repeated or reordered", expected=str(number),
                      found=str(entry.sequence))
    if entry.deployment != deployment:
        raise _broken(path, number, "it was written for another deployment (a history "
                      "copied in from elsewhere)", expected=deployment, found=entry.deployment)


def _check_signatures_consistent(path: Path, lines: list[str]) -> None:
    """Without the public key nothing can be verified; still, a history that is signed at
    all must be signed on every line (a stripped signature is tampering too)."""
    signed = [isinstance(json.loads(line).get("signature"), dict) for line in lines]
    if any(signed) and not all(signed):
        raise _broken(path, signed.index(False) + 1, "it is unsigned in a signed history")


def _check_anchor(path: Path, entries: list[HistoryEntry], anchor: Anchor | None) -> None:
    if anchor is None:
        return
    head = anchor.head
    if head is None:
        if any(e.sequence is not None for e in entries):
            raise StageError(
                "DEPLOY_HISTORY_UNANCHORED",
                f"deployment history {path} has {len(entries)} entries but the registry holds "
                f"no head for it (tag {anchor_tag(entries[-1].deployment or '')!r}): the tag "
                "was removed, or its write failed after the last deploy. Nothing was "
                "deployed. Compare the history with the decision records in records/ and "
                "MLflow; when it is complete, set the tag to "
                f"'{len(entries)}:{entries[-1].sha256}' (sequence:entry_sha256), then deploy "
                "again.",
                details={"path": str(path), "entries": len(entries)})
        return
    if head.sequence > len(entries) or entries[head.sequence - 1].sha256 != head.entry_sha256:
        found = head_of(entries)
        raise StageError(
            "DEPLOY_HISTORY_TRUNCATED",
            f"deployment history {path} does not reach its anchored head (entry "
            f"{head.sequence}, sha256 {head.entry_sha256[:16]}...; the file has "
            f"{len(entries)} entries): it was cut short or replaced by another copy. Nothing "
            "was deployed. Restore the complete history from a backup (the decision records "
            "in records/ and MLflow say what it held), then deploy again.",
            details={"path": str(path), "anchored_sequence": head.sequence,
                     "entries": len(entries),
                     "head": None if found is None else found.tag_value()})


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


def _unsigned(path: Path, number: int, public_key_path: Path) -> StageError:
    return StageError(
        "DEPLOY_HISTORY_UNSIGNED",
        f"deployment history {path} line {number} is unsigned, but the registry's public key "
        f"{public_key_path} exists: every line must be signed with it (an unsigned history "
        "can be rewritten by anyone who can write the file). Nothing was deployed. Restore a "
        "signed copy from a backup. A history written before this machine had a key pair "
        "(Shipyard before signed histories) cannot be verified: compare it with the decision "
        "records, then move it and records/ into an archive folder and start the history again "
        "(see docs/troubleshooting.md).",
        details={"path": str(path), "line": number})


def _torn(path: Path, number: int) -> StageError:
    return StageError(
        "DEPLOY_HISTORY_TORN",
        f"deployment history {path} line {number} is incomplete (no newline at the end of "
        "the file): a write was interrupted, e.g. by a crash. Nothing was deployed. Run "
        f"`python -m deploy.history repair {path.parent.name}`: it checks every complete "
        "line and the anchored head, then moves the torn bytes aside.",
        details={"path": str(path), "line": number})


if __name__ == "__main__":
    raise SystemExit(main())


def history_keys(settings: Settings) -> tuple[KeyPair | None, Path | None]:
    """The registry's key pair signs the history when this machine has it (key mode)."""
    keys = settings.keys_dir
    private, public = keys / PRIVATE_KEY_NAME, keys / PUBLIC_KEY_NAME
    if private.is_file() and public.is_file():
        return KeyPair(private, public), public
    return None, public if public.is_file() else None
