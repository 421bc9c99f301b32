"""One deploy session: what every action that changes what a deployment serves does, in one
place, so the canary deploy (deploy/stage.py), `shipyard serve` and `shipyard undo`
(deploy/operations.py) cannot drift apart again:

    with DeploySession.open(name, registered, config, settings, record) as session:
        session.champion_before      # the alias, checked against the signed champion history
        session.verify(model, ...)   # registry.verify, fail-closed, before any process starts
        session.backend(verified)    # built once; a canary left by a killed deploy rolled back
        session.require_parity(...)  # served = evaluated, a refusal written as a decision
        session.move_champion(...)   # compare-and-set against what the session read
        session.finish(...)          # decision record, signed history + its MLflow anchor,
                                     # verified model-copy retention, MLflow

The session holds the deployment's lock (DEPLOY_LOCKED for a second one) and turns SIGTERM
into an error, so its cleanup runs. Before it, serve and undo never pruned model copies, never
checked the champion against the signed history and never checked parity.
"""

from __future__ import annotations

import getpass
import json
import logging
import re
import shutil
import socket
import urllib.request
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import retention
from common.digests import sha256_file
from common.errors import StageError
from common.settings import Settings
from common.signals import signals_raise_stage_interrupted
from deploy import history, parity
from deploy.backend import Backend, build_backend
from deploy.config import DeployConfig
from deploy.decision_record import DecisionRecord, log_to_mlflow, write_record
from deploy.decision_record_schema import ChampionMove, Parity, Verification
from deploy.loadgen import load_eval_prompts
from deploy.model_ref import ModelToDeploy, VerifiedModel
from deploy.outcomes import Outcome, RecordAction, is_recorded
from deploy.state import deployment_lock, state_path
from registry import mlflow_registry as reg
from registry.aliases import champion_version, move_champion
from registry.errors import RegistryError
from registry.eval_attestation import CurrentChampion
from registry.model_uri import ModelUri
from registry.policy import load_policy
from registry.signing import PUBLIC_KEY_NAME
from registry.verify import verify_model

logger = logging.getLogger(__name__)


@dataclass
class DeploySession:
    name: str
    registered_model: str
    config: DeployConfig
    settings: Settings
    work_dir: Path
    client: Any
    record: DecisionRecord
    # the champion alias when the session started (compare-and-set base for moving it)
    champion_before: str | None

    @classmethod
    @contextmanager
    def open(cls, name: str, registered_model: str, config: DeployConfig, settings: Settings,
             record: DecisionRecord) -> Iterator[DeploySession]:
        """Lock the deployment, read the champion and check it against the signed history
        (DEPLOY_CHAMPION_UNKNOWN / DEPLOY_HISTORY_*), before anything is verified or started."""
        work_dir = state_path(settings.home, name).parent
        with deployment_lock(work_dir, name), signals_raise_stage_interrupted():
            client = reg.client_for(settings.mlflow_tracking_uri)
            champion = champion_version(client, registered_model, config.champion_alias)
            check_champion_in_history(
                champion, work_dir, settings, config.champion_alias,
                anchor=history.read_anchor(client, registered_model, name))
            record.champion = ChampionMove(before=champion, after=champion, moved=False)
            yield cls(name, registered_model, config, settings, work_dir, client, record,
                      champion)

    def verify(self, model_uri: str, digest: str, served: str, *,
               evaluated_against: CurrentChampion | None) -> VerifiedModel:
        verified = verify_for_serving(model_uri, digest, self.config, self.settings,
                                      self.work_dir, served, evaluated_against=evaluated_against)
        if self.record.verification is None:  # the deployed model's (not a stable's after it)
            self.record.verification = Verification(model_uri=verified.model_uri, passed=True,
                                                    model_digest=verified.digest)
        return verified

    def current_champion(self, model: ModelToDeploy) -> CurrentChampion | None:
        return current_champion(self.client, model, self.champion_before)

    def backend(self, verified: VerifiedModel, given: Backend | None = None) -> Backend:
        """The deployment's backend (`given`, or built for the config); the caller rolls back
        a leftover canary first (deploy.backend.roll_back_leftover_canary)."""
        backend = given or build_backend(self.config, self.settings, self.name, verified,
                                         self.record)
        self.record.engine = backend.engine_kind
        self.record.backend = self.config.backend
        return backend

    def require_parity(self, backend: Backend, role: str, model: VerifiedModel,
                       model_ref: ModelToDeploy, *, stop_all: bool) -> None:
        """Served = evaluated for the engine of track `role`; on a mismatch the engines are
        stopped (`stop_all`, a stable that serves nobody) or the canary rolled back, and the
        refusal is written as a decision record before the error propagates."""
        try:
            require_parity(backend, role, model, self.config, self.record)
        except StageError as exc:
            if stop_all:
                backend.stop_all()
            else:
                backend.rollback_canary()
            self._record_refusal(exc, backend, model_ref)
            raise

    def move_champion(self, model: ModelToDeploy) -> None:
        # Compare-and-set against the value read when this session started (CHAMPION_MOVED).
        move_champion(self.client, self.registered_model, model.version,
                      self.config.champion_alias, expected_current=self.champion_before)
        self.record.champion = ChampionMove(before=self.champion_before, after=model.version,
                                            moved=True, moved_at=datetime.now(UTC).isoformat())

    def finish(self, outcome: Outcome, action: RecordAction, backend: Backend,
               model: ModelToDeploy, digest: str) -> tuple[Path, str | None]:
        """The decision record (file and MLflow), the signed history entry, and retention of
        the verified model copies (never those the stable and a canary serve)."""
        self.record.finish(outcome, action, backend.endpoint, backend.describe())
        path = write_record(self.work_dir, self.record)
        append_history(self.work_dir, self.settings, action, model.version, digest, path)
        prune_model_copies(self.work_dir, self.config.keep_model_copies, protected_versions=[
            v for v in (backend.running_stable_version(), backend.leftover_canary_version())
            if v])
        return path, log_to_mlflow(self.client, model, self.record)

    def _record_refusal(self, exc: StageError, backend: Backend,
                        model: ModelToDeploy) -> None:
        """A served-model mismatch is a decision about what serves: write its decision record
        (outcome FAIL, action `refused`) before the error propagates, and name it there."""
        if exc.code != "DEPLOY_SERVED_MODEL_MISMATCH":
            return
        self.record.note(exc.message)
        try:
            endpoint = backend.endpoint
        except StageError:  # the local backend's router was stopped with the refused stable
            endpoint = ""
        self.record.finish("FAIL", "refused", endpoint, backend.describe())
        path = write_record(self.work_dir, self.record)
        exc.details["decision_record"] = str(path)
        exc.details["decision_record_uri"] = log_to_mlflow(self.client, model, self.record)


def current_champion(client: Any, model: ModelToDeploy,
                     champion: str | None) -> CurrentChampion | None:
    """What the model's eval evidence must be measured against: the champion it would replace
    (none on a first deployment); None when the model is the champion already."""
    if champion == model.version:
        return None
    if champion is None:
        return CurrentChampion(None, "no champion (first deployment)")
    # a champion without a digest tag matches no evidence (never "no champion")
    digest = digest_of(client, model, champion) or "unknown: the version has no model_digest tag"
    return CurrentChampion(digest, f"models:/{model.registered_model_name}/{champion}")

def verify_for_serving(model_uri: str, expected_digest: str, config: DeployConfig,
                       settings: Settings, work_dir: Path, served: str, *,
                       evaluated_against: CurrentChampion | None = None) -> VerifiedModel:
    """registry.verify_model into a fresh directory; any failure is DEPLOY_MODEL_REJECTED,
    evidence measured against another champion than `evaluated_against` DEPLOY_EVIDENCE_STALE."""
    public_key = Path(config.public_key_path) if config.public_key_path else \
        settings.keys_dir / PUBLIC_KEY_NAME
    version = model_uri.rsplit("/", 1)[-1]
    target = work_dir / "models" / f"v{version}"
    staging = target.with_name(target.name + ".verifying")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        result = verify_model(model_uri, tracking_uri=settings.mlflow_tracking_uri,
                              policy=load_policy(config.policy_path, keys_dir=settings.keys_dir),
                              public_key=public_key,
                              download_dir=staging, evaluated_against=evaluated_against)
    except RegistryError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        code = ("DEPLOY_EVIDENCE_STALE" if exc.code == "DEPLOY_EVIDENCE_STALE"
                else "DEPLOY_MODEL_REJECTED")
        raise StageError(
            code,
            f"{model_uri} failed verification, nothing was started: {exc}",
            details={"check": exc.check, "expected": exc.expected, "found": exc.found},
        ) from exc
    if result.model_digest != expected_digest:
        shutil.rmtree(staging, ignore_errors=True)
        raise StageError("DEPLOY_MODEL_REJECTED",
                         f"{model_uri} verified as sha256:{result.model_digest}, but the deploy "
                         f"request names sha256:{expected_digest}; nothing was started.")
    assert result.model_dir is not None
    # Verified bytes move into place in one rename; a half-verified copy is never served.
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    model_dir = target / result.model_dir.relative_to(staging)
    return VerifiedModel(model_uri, result.version, result.model_digest, model_dir, served)

_MODEL_COPY = re.compile(r"^v(\d+)$")


def prune_model_copies(work_dir: Path, keep: int, *, protected_versions: Collection[str] = (),
                       dry_run: bool = False) -> retention.PruneResult:
    """Remove verified model copies (`<work_dir>/models/v<N>`) but the `keep` most recent
    versions and `protected_versions` (what the stable and canary serve: their engines read
    these files). Run under `deployment_lock`: a deploy verifying a copy must not race it."""
    models = work_dir / "models"
    copies = retention.children(models, include=lambda p: p.is_dir() and bool(
        _MODEL_COPY.match(p.name)))
    entries = retention.scan(copies, newness=lambda p: float(p.name[1:]))
    return retention.prune_keep_newest(
        entries, keep, protected=[models / f"v{v}" for v in protected_versions], dry_run=dry_run)

def require_parity(backend: Backend, role: str, model: VerifiedModel, config: DeployConfig,
                    record: DecisionRecord) -> None:
    """Served = evaluated (deploy/parity.py) for the engine just started on track `role`,
    before it takes traffic; DEPLOY_SERVED_MODEL_MISMATCH when it serves another model. The
    caller stops the engine. Recorded in the decision record under `parity.<role>`."""
    if record.parity is None:
        record.parity = Parity(
            prompts_version=parity.PROMPTS_VERSION, prompts_sha256=parity.PROMPTS_SHA256,
            max_tokens=config.parity_max_tokens, tolerance=config.parity_logprob_tolerance,
            max_logprob_diff_allowed=config.parity_max_logprob_diff)
    checks = record.parity
    if not config.parity_check:
        checks.record_check(role, {"skipped": "deploy.parity_check is false"})
        return
    url = backend.track_url(role)
    if url is None:
        reason = (f"the {role} engine cannot be reached around the traffic split from where "
                  "the stage runs: not checked (docs/stages/deploy_canary.md, 'What is "
                  "verified where')")
        record.note(f"served-model parity: {reason}")
        logger.warning("served-model parity: %s", reason)
        checks.record_check(role, {"skipped": reason})
        return
    result = parity.check_engine(url, model.served_model_name, model.model_dir,
                                 max_tokens=config.parity_max_tokens,
                                 tolerance=config.parity_logprob_tolerance,
                                 max_logprob_diff=config.parity_max_logprob_diff)
    checks.record_check(role, {"model_uri": model.model_uri, **result.to_dict()})
    logger.info("served-model parity of the %s engine (%s): %s, %d tokens compared, max "
                "logprob diff %.3g, %.1f s", role, model.model_uri,
                "matched" if result.matched else "MISMATCH", result.num_tokens_compared,
                result.max_logprob_diff, result.seconds)
    if not result.matched:
        consequence = ("The canary was rolled back at weight 0" if role == "canary" else
                       "The engine was stopped") + "; the champion alias did not move."
        raise parity.mismatch_error(result, role, model.model_uri, model.digest, consequence)

def smoke_check(endpoint: str, served: str, num_requests: int) -> None:
    prompts = load_eval_prompts(limit=num_requests)
    failures = []
    for prompt in prompts:
        body = {"model": served, "max_tokens": 8, "temperature": 0.0,
                "messages": [{"role": "user", "content": prompt}]}
        request = urllib.request.Request(f"{endpoint}/v1/chat/completions",
                                         data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = json.loads(response.read())
            if not payload.get("choices"):
                failures.append(f"{prompt!r}: no choices")
        except (OSError, ValueError) as exc:
            failures.append(f"{prompt!r}: {exc}")
    if failures:
        raise StageError("DEPLOY_SMOKE_CHECK_FAILED",
                         f"{len(failures)}/{len(prompts)} smoke requests to {endpoint} failed: "
                         f"{failures[:3]}")

def digest_of(client: Any, model: ModelToDeploy, version: str) -> str:
    tags = dict(client.get_model_version(model.registered_model_name, version).tags)
    return str(tags.get(reg.TAG_MODEL_DIGEST, ""))

def check_champion_in_history(champion: str | None, work_dir: Path, settings: Settings,
                               alias: str, *, anchor: history.Anchor | None = None) -> None:
    """Once a history exists, the alias must name a version the history made champion: an
    alias set (or removed) behind Shipyard's back is refused, never taken as a first
    deployment or as already serving. The history itself must verify (signatures, sequence,
    deployment) and reach the head `anchor` records (deploy/history.py)."""
    entries = history.read_history(work_dir, public_key_path=history.history_keys(settings)[1],
                                   anchor=anchor)
    made_champion = history.champion_versions(entries)
    if made_champion and champion not in made_champion:
        raise StageError(
            "DEPLOY_CHAMPION_UNKNOWN",
            f"the {alias!r} alias names version {champion}, which the deployment history "
            f"{history.history_path(work_dir)} never made champion (last recorded champion: "
            f"{history.current_champion(entries)}): it was moved or removed outside Shipyard. "
            "Point the alias back at the recorded champion (or record the change with "
            "`shipyard undo`), then deploy again.",
            details={"alias_version": champion, "history_versions": sorted(made_champion)},
        )

def append_history(work_dir: Path, settings: Settings, action: RecordAction, version: str,
                    digest: str, record_path: Path) -> None:
    if not is_recorded(action):  # already_serving moves nothing
        return  # already_serving: nothing moved, nothing was decided about traffic
    key_pair, public_key = history.history_keys(settings)
    # The record names the registered model whose tag anchors the history's head.
    model_uri = str(json.loads(record_path.read_text())["model_uri"])
    registered = ModelUri.parse(model_uri).name
    client = reg.client_for(settings.mlflow_tracking_uri)
    anchor = history.read_anchor(client, registered, work_dir.name)
    entry = history.append_entry(
        work_dir, action=action, version=version, digest=digest,
        decision_record_sha256=sha256_file(record_path),
        actor=f"{getpass.getuser()}@{socket.gethostname()}",
        key_pair=key_pair, public_key_path=public_key, anchor=anchor)
    history.write_anchor(client, registered, work_dir.name, entry)
