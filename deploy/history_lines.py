"""One line of the deployment history (deploy/history.py): the entry, its digest and DSSE
signature, and the checks every line must pass (chain, sequence, deployment, signature), with
the errors they raise; and the registry key pair that signs the lines."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import StageError
from registry.dsse import verify_envelope
from registry.errors import RegistryError
from registry.signing import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME, KeyPair

if TYPE_CHECKING:
    from common.settings import Settings

HISTORY_FILE = "history.jsonl"
PAYLOAD_TYPE = "application/vnd.shipyard.deployment-history+json"


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


def history_path(work_dir: Path) -> Path:
    """The history of the deployment whose directory is `work_dir`
    (`<SHIPYARD_HOME>/deployments/<name>`)."""
    return Path(work_dir) / HISTORY_FILE


def head_of(entries: Sequence[HistoryEntry]) -> HistoryHead | None:
    return HistoryHead(len(entries), entries[-1].sha256) if entries else None


def history_keys(settings: Settings) -> tuple[KeyPair | None, Path | None]:
    """The registry's key pair signs the history when this machine has it (key mode)."""
    keys = settings.keys_dir
    private, public = keys / PRIVATE_KEY_NAME, keys / PUBLIC_KEY_NAME
    if private.is_file() and public.is_file():
        return KeyPair(private, public), public
    return None, public if public.is_file() else None


def split_lines(raw: bytes) -> tuple[list[str], bytes | None]:
    """The complete lines, and the bytes after the last newline when a write was cut short
    (None when the file ends with a newline, as every append leaves it)."""
    complete, newline, tail = raw.rpartition(b"\n")
    text = (complete + newline).decode("utf-8", "replace")
    return text.splitlines(), (tail if tail else None)


def check_lines(path: Path, lines: list[str], deployment: str,
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


def torn_error(path: Path, number: int) -> StageError:
    return StageError(
        "DEPLOY_HISTORY_TORN",
        f"deployment history {path} line {number} is incomplete (no newline at the end of "
        "the file): a write was interrupted, e.g. by a crash. Nothing was deployed. Run "
        f"`python -m deploy.history repair {path.parent.name}`: it checks every complete "
        "line and the anchored head, then moves the torn bytes aside.",
        details={"path": str(path), "line": number})

