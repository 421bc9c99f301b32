"""Deploy actions a person takes by hand (`shipyard serve`, `shipyard undo`) and the audit trail
they leave (`shipyard history`), built from the deploy stage's own pieces.

Both actions serve one registered version as the stable, with no canary:

    verify (registry.verify, fail-closed)  ->  start it as the stable behind the router (the
    old stable drains, then stops)  ->  smoke check  ->  move the champion alias  ->  decision
    record (on disk and in MLflow)

`undo` picks the version the champion alias pointed at before it last moved, or the version
given, from the signed deployment history (deploy/history.py: hash-chained, each entry signed
with the registry's key), never from the decision records, which are unsigned JSON anyone with
write access to the deployment folder can edit. The target must be a version the history made
champion, and it is served only if it verifies as the very digest the history recorded.
`serve` (a version by hand) needs eval evidence measured against the current champion, as a
deploy does (DEPLOY_EVIDENCE_STALE).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException

from common.digests import sha256_digest
from common.errors import StageError
from common.settings import Settings
from deploy import history
from deploy.backend import roll_back_leftover_canary
from deploy.config import DeployConfig
from deploy.decision_record import start_record
from deploy.decision_record_schema import RecordFile, RecordListing, StableBefore, list_records
from deploy.model_ref import ModelToDeploy
from deploy.outcomes import ManualAction
from deploy.session import DeploySession, smoke_check
from deploy.state import load_state, state_path
from registry import mlflow_registry as reg
from registry.aliases import champion_version
from registry.errors import RegistryError
from registry.model_uri import ModelUri

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ManualDeploy:
    action: ManualAction
    model_uri: str
    model_digest: str
    champion_before: str | None
    champion_after: str
    endpoint: str
    record_path: Path


def decision_records(work_dir: Path) -> RecordListing:
    """Every decision record of the deployment, oldest first, and those that do not load
    (DEPLOY_RECORD_INVALID each: `shipyard history` lists them; undo, which trusts only the
    signed history, logs them)."""
    return list_records(work_dir)


def previous_champion(records: list[RecordFile], current: str | None) -> str | None:
    """The version the champion alias held before it last moved to `current`, as the
    decision records tell it: for people reading the records. Undo does not trust them
    (`previous_champion_entry` reads the signed history)."""
    for loaded in reversed(records):
        champion = loaded.record.champion
        if champion is None:
            continue
        before, after = champion.before, champion.after
        if champion.moved and str(after) == str(current) and before is not None \
                and before != str(current):
            return before
    return None


def previous_champion_entry(entries: list[history.HistoryEntry],
                            current: str | None) -> history.HistoryEntry | None:
    """The signed history's entry of the champion before the last move to `current`."""
    moves = [e for e in entries if e.action in history.CHAMPION_ACTIONS]
    last = max((i for i, e in enumerate(moves) if e.version == str(current)), default=None)
    if last is None:
        return None
    return next((e for e in reversed(moves[:last]) if e.version != str(current)), None)


def champion_entry(entries: list[history.HistoryEntry],
                   version: str) -> history.HistoryEntry | None:
    """The signed history's latest entry that made `version` the champion."""
    moves = [e for e in entries if e.action in history.CHAMPION_ACTIONS and e.version == version]
    return moves[-1] if moves else None


def registered_model_of(records: list[RecordFile], name: str) -> str:
    """The registered model a deployment serves (from its newest record's model URI)."""
    for loaded in reversed(records):
        with contextlib.suppress(RegistryError):  # a record with another URI names none
            return ModelUri.parse(loaded.record.model_uri).name
    return name


def serve_version(registered_model_name: str, version: str, config: DeployConfig,
                  settings: Settings, *, action: ManualAction = "served",
                  reason: str | None = None, signed_digest: str | None = None) -> ManualDeploy:
    """Verify `models:/NAME/VERSION` and serve it as the stable with no canary; move the
    champion alias to it. One deploy per deployment at a time (DEPLOY_LOCKED).

    `signed_digest` (undo): the digest the signed history recorded for the version, which it
    must verify as; the version was champion before, so its evidence is not judged against
    the current champion. Without it (`serve`), the eval evidence must be measured against
    the current champion, as in a deploy."""
    name = config.deployment_name or registered_model_name
    model = _model_to_serve(registered_model_name, str(version), settings, signed_digest)
    record = start_record(name, model, config)
    record.note(reason or f"{action}: {model.model_uri} served as the stable by hand, "
                          "no canary")
    with DeploySession.open(name, registered_model_name, config, settings, record) as session:
        return _serve(session, model, action, undo=signed_digest is not None)


def undo(name: str, config: DeployConfig, settings: Settings, *,
         to_version: str | None = None) -> ManualDeploy:
    """Serve the previous champion (or `to_version`, a former champion) again; the target
    comes from the signed history and must verify as the digest recorded there."""
    work_dir = state_path(settings.home, name).parent
    listing = decision_records(work_dir)
    for problem in listing.invalid:  # undo trusts the signed history, not the records
        logger.warning("%s", problem)
    records = listing.records
    registered = registered_model_of(records, name)
    client = reg.client_for(settings.mlflow_tracking_uri)
    # signed, chained and reaching the head MLflow anchors: a cut or swapped history fails
    entries = history.read_history(work_dir, public_key_path=history.history_keys(settings)[1],
                                   anchor=history.read_anchor(client, registered, name))
    if not records and not entries:
        raise StageError("DEPLOY_NOT_FOUND",
                         f"deployment {name!r} has no decision records or history under "
                         f"{work_dir}: nothing to undo. `shipyard history` lists what was "
                         "deployed.")
    current = champion_version(client, registered, config.champion_alias)
    target = (champion_entry(entries, str(to_version)) if to_version is not None
              else previous_champion_entry(entries, current))
    if to_version is not None and target is None:
        raise StageError(
            "DEPLOY_UNDO_NOT_A_CHAMPION",
            f"{registered}: version {to_version} was never the champion of deployment "
            f"{name!r} by its signed history {history.history_path(work_dir)}; undo only goes "
            f"back to a former champion (recorded: "
            f"{sorted(history.champion_versions(entries)) or 'none'}). To serve another "
            f"version, deploy it or `shipyard serve models:/{registered}/{to_version}` (its "
            "evaluation must be against the current champion).")
    if target is None or target.version == current:
        why_not = ("it is the version asked for" if target
                   else "no earlier champion in the signed history")
        raise StageError(
            "DEPLOY_UNDO_NO_PREVIOUS",
            f"{registered}: no version to go back to (champion {current}; {why_not}). "
            "Name one with --to-version N (see `shipyard history`).")
    why = f"undo: champion {current} -> {target.version} (signed history), requested by hand"
    return serve_version(registered, target.version, _same_engine(config, settings, name),
                         settings, action="undo", reason=why, signed_digest=target.digest)


def _same_engine(config: DeployConfig, settings: Settings, name: str) -> DeployConfig:
    """`engine: auto` on an undo means the engine the running stable uses: going back to an
    earlier version is no time to switch engines (or to build the vLLM venv)."""
    if config.engine != "auto":
        return config
    stable = load_state(settings.home, name).stable
    if stable is None or stable.kind not in ("vllm", "local"):
        return config
    return dataclasses.replace(config, engine=stable.kind)


def _model_to_serve(registered: str, version: str, settings: Settings,
                    signed_digest: str | None) -> ModelToDeploy:
    client = reg.client_for(settings.mlflow_tracking_uri)
    try:
        model_version = client.get_model_version(registered, version)
    except MlflowException as exc:
        raise StageError("DEPLOY_NOT_FOUND",
                         f"models:/{registered}/{version} is not in the registry at "
                         f"{settings.mlflow_tracking_uri}: {exc}") from exc
    # undo: the bytes must be the ones the signed history recorded, whatever the tag says
    digest = signed_digest or str(dict(model_version.tags).get(reg.TAG_MODEL_DIGEST, ""))
    what = ("the signed history's digest" if signed_digest else
            f"models:/{registered}/{version} MLflow tag {reg.TAG_MODEL_DIGEST}")
    return ModelToDeploy(registered, version, sha256_digest(digest, what), model_version.run_id)


def _serve(session: DeploySession, model: ModelToDeploy, action: ManualAction, *,
           undo: bool) -> ManualDeploy:
    """The same session as a deploy, without the canary: verify (undo: as the signed
    history's digest; serve: with evidence against the current champion), start as the
    stable, parity and smoke check, move the champion, record, prune."""
    config = session.config
    served = config.served_model_name or model.registered_model_name
    verified = session.verify(model.model_uri, model.model_digest, served,
                              evaluated_against=None if undo
                              else session.current_champion(model))
    backend = session.backend(verified)
    roll_back_leftover_canary(backend, session.record)
    previous = backend.running_stable_version()
    if previous is not None:
        session.record.stable_before = StableBefore(
            f"models:/{model.registered_model_name}/{previous}")
    backend.start_stable(verified)
    # a stable that serves another model than the one verified serves nobody
    session.require_parity(backend, "stable", verified, model, stop_all=True)
    smoke_check(backend.endpoint, served, config.smoke_requests)
    session.move_champion(model)
    path, _ = session.finish("PASS", "undo" if action == "undo" else "served", backend, model,
                             verified.digest)
    return ManualDeploy(action, model.model_uri, verified.digest, session.champion_before,
                        model.version, backend.endpoint, path)
