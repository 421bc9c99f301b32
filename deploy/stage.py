"""The `deploy_canary` stage as a plain function: verify, serve, canary, decide, record.

Order is the safety property: the model is verified with the registry's verifier (signature,
provenance, policy) and its digest compared with the request's before any process starts;
a rejected model raises DEPLOY_MODEL_REJECTED and nothing runs. The bytes served are the
verified download, never a second copy.

Then, by what the registry and the deployment already have:
  no `champion` yet            -> first deployment: serve as stable, smoke-check, set champion
  version is the champion      -> make sure it is serving; nothing to decide
  otherwise                    -> (re)start the champion as stable if needed, canary the new
                                  version through the steps; PASS at 100 % promotes it and
                                  moves `champion`; FAIL / INCONCLUSIVE rolls it back and
                                  leaves `champion` untouched
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
import re
import shutil
import socket
import urllib.request
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from common import retention
from common.digests import sha256_file
from common.errors import StageError
from common.fs import private_dir
from common.settings import Settings
from common.signals import signals_raise_stage_interrupted
from deploy import history, parity
from deploy.config import DeployConfig
from deploy.controller import CanaryController, RolloutReport
from deploy.decision_record import DecisionRecord, log_to_mlflow, write_record
from deploy.loadgen import LoadGenerator, LoadSpec, load_eval_prompts
from deploy.local_backend import LocalBackend
from deploy.metric_sources import MetricsSource
from deploy.model_ref import ModelToDeploy, VerifiedModel
from deploy.outcomes import DeployAction, Outcome
from deploy.state import state_path
from registry import mlflow_registry as reg
from registry.aliases import champion_version, check_champion_unmoved, move_champion
from registry.errors import RegistryError
from registry.eval_attestation import CurrentChampion
from registry.policy import load_policy
from registry.signing import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME, KeyPair
from registry.verify import verify_model
from serving.engine_choice import resolve_engine
from serving.router import FaultSpec
from serving.vllm_venv import vllm_venv_dir

logger = logging.getLogger(__name__)


class Backend(Protocol):
    """Where the tracks run and how traffic is split: everything the stage asks of them."""

    @property
    def endpoint(self) -> str:
        """OpenAI-compatible base URL clients use (append /v1)."""
        ...

    @property
    def engine_kind(self) -> str:
        """The engine serving the tracks ("vllm" or "local"), for the decision record."""
        ...

    @property
    def needs_load_generator(self) -> bool:
        """True when nothing but the stage sends requests during a rollout (a loopback
        router), so the stage drives load itself; False when real clients are the traffic."""
        ...

    def track_url(self, role: str) -> str | None:
        """Base URL that reaches only the engine of track `role` ("stable" or "canary"),
        around the traffic split, for checks before the track takes traffic; None where the
        stage cannot reach it (the reason is the backend's to document)."""
        ...

    def running_stable_version(self) -> str | None: ...
    def leftover_canary_version(self) -> str | None: ...
    def repair(self) -> list[str]: ...
    def start_stable(self, model: VerifiedModel) -> None: ...
    def start_canary(self, model: VerifiedModel) -> None: ...
    def set_canary_weight(self, percent: int) -> None: ...
    def inject_faults(self, canary: FaultSpec | None) -> None:
        """Set (or with None, clear) a fault drill on the canary track. A backend that
        cannot inject faults accepts None and raises CONFIG_INVALID for a FaultSpec."""
        ...

    def metrics_source(self) -> MetricsSource: ...
    def promote_canary(self) -> None: ...
    def rollback_canary(self) -> None: ...
    def describe(self) -> dict[str, Any]: ...
    def stop_command(self) -> str: ...
    def stop_all(self) -> object: ...


# What the stage did about the traffic (the module docstring says when each happens).


@dataclass(frozen=True)
class DeployOutcome:
    deployment_name: str
    model_uri: str
    model_digest: str
    outcome: Outcome
    action: DeployAction
    engine: str
    backend: str
    endpoint: str
    served_model_name: str
    champion_version: str | None
    record_path: Path
    record_uri: str | None
    stop_command: str
    record: dict[str, Any]


def deploy_canary(model: ModelToDeploy, config: DeployConfig, settings: Settings, *,
                  backend: Backend | None = None) -> DeployOutcome:
    """Verify, serve, canary, decide, record. One deploy per deployment at a time (a file
    lock); SIGTERM rolls a started canary back before the process ends."""
    name = config.deployment_name or model.registered_model_name
    work_dir = state_path(settings.home, name).parent
    with deployment_lock(work_dir, name), signals_raise_stage_interrupted():
        return _deploy_locked(model, config, settings, backend, name, work_dir)


def _deploy_locked(model: ModelToDeploy, config: DeployConfig, settings: Settings,
                   backend: Backend | None, name: str, work_dir: Path) -> DeployOutcome:
    served = config.served_model_name or model.registered_model_name
    client = reg.client_for(settings.mlflow_tracking_uri)
    record = DecisionRecord.start(name, model, config)

    # 1. Verify first: fail closed, nothing started yet. The eval evidence must be measured
    # against the champion this deploy would replace (DEPLOY_EVIDENCE_STALE).
    champion = champion_version(client, model.registered_model_name, config.champion_alias)
    verified = verify_for_serving(model.model_uri, model.model_digest, config, settings,
                                  work_dir, served,
                                  evaluated_against=current_champion(client, model, champion))
    record.data["verification"] = {"model_uri": verified.model_uri, "passed": True,
                                   "model_digest": verified.digest}
    record.data["champion"] = {"before": champion, "after": champion, "moved": False}
    _check_champion_in_history(champion, work_dir, settings, config.champion_alias,
                               anchor=history.read_anchor(client, model.registered_model_name,
                                                          name))

    if backend is None:
        backend = _build_backend(config, settings, name, verified, record)
    record.data["engine"] = backend.engine_kind
    record.data["backend"] = config.backend

    try:
        _roll_back_leftover_canary(backend, record)
        outcome, action = _roll_out(backend, verified, champion, model, config, settings,
                                    work_dir, record, client)
    except BaseException:
        # Whatever broke (SIGTERM included), a half-started canary must not keep taking
        # traffic or keep running.
        _safe_rollback(backend)
        raise
    record.finish(outcome, action, backend.endpoint, backend.describe())
    path = write_record(work_dir, record.data)
    _append_history(work_dir, settings, action, model.version, verified.digest, path)
    prune_model_copies(work_dir, config.keep_model_copies, protected_versions=[
        v for v in (backend.running_stable_version(), backend.leftover_canary_version()) if v])
    uri = log_to_mlflow(client, model, record.data)
    _print_summary(name, served, record.data, path, backend)
    return DeployOutcome(
        deployment_name=name, model_uri=model.model_uri, model_digest=model.model_digest,
        outcome=outcome, action=action, engine=str(record.data["engine"]),
        backend=config.backend, endpoint=backend.endpoint, served_model_name=served,
        champion_version=record.data["champion"]["after"], record_path=path, record_uri=uri,
        stop_command=backend.stop_command(), record=record.data,
    )


@contextmanager
def deployment_lock(work_dir: Path, name: str) -> Iterator[None]:
    """An exclusive, non-blocking lock on the deployment: a second deploy of it fails at
    once (DEPLOY_LOCKED) instead of interleaving with the first (shared staging directory,
    state file, router). The kernel releases it when the holder dies, SIGKILL included."""
    private_dir(work_dir)  # 0700: state, records, history and tokens live here
    path = work_dir / "deploy.lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise StageError(
                "DEPLOY_LOCKED",
                f"deployment {name!r} is being deployed by another process ({holder}; lock "
                f"{path}). Wait for it to finish, or stop it; two deploys never interleave.",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _roll_back_leftover_canary(backend: Backend, record: DecisionRecord) -> None:
    """A deploy killed mid-rollout (SIGKILL: no cleanup ran) leaves its canary: take it out
    of traffic and stop it before anything else. A dead router is restarted first."""
    for note in backend.repair():
        record.note(note)
    leftover = backend.leftover_canary_version()
    if leftover is not None:
        record.note(f"a canary of version {leftover} was left by an interrupted deploy: "
                    "rolled back first")
        backend.rollback_canary()


def _build_backend(config: DeployConfig, settings: Settings, name: str,
                   verified: VerifiedModel, record: DecisionRecord) -> Backend:
    if config.backend == "kubernetes":
        from deploy.kubernetes_backend import KubernetesBackend

        assert config.prometheus_url and config.gateway_url  # DeployConfig checks
        record.note("engine: vllm on Kubernetes (the image in the overlay)")
        return KubernetesBackend.from_kubeconfig(
            Path(config.kustomize_overlay), namespace=config.namespace,
            endpoint=config.gateway_url, prometheus_url=config.prometheus_url)
    venv_dir = vllm_venv_dir(config.vllm_venv_dir, settings.home)
    kind, why = resolve_engine(config.engine, verified.model_dir, venv_dir)
    eager = config.enforce_eager and kind == "vllm"
    record.note(f"engine: {kind}{' (--enforce-eager)' if eager else ''} ({why})")
    return LocalBackend(settings.home, name, engine_kind=kind,
                        ready_timeout_seconds=config.engine_ready_timeout_seconds,
                        max_model_len=config.max_model_len, vllm_venv_dir=venv_dir,
                        enforce_eager=config.enforce_eager,
                        canary_lease_seconds=config.canary_lease())


def current_champion(client: Any, model: ModelToDeploy,
                     champion: str | None) -> CurrentChampion | None:
    """What the model's eval evidence must be measured against: the champion it would replace
    (none on a first deployment); None when the model is the champion already."""
    if champion == model.version:
        return None
    if champion is None:
        return CurrentChampion(None, "no champion (first deployment)")
    # a champion without a digest tag matches no evidence (never "no champion")
    digest = _digest_of(client, model, champion) or "unknown: the version has no model_digest tag"
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


def _roll_out(backend: Backend, verified: VerifiedModel, champion: str | None,
              model: ModelToDeploy, config: DeployConfig, settings: Settings, work_dir: Path,
              record: DecisionRecord, client: Any) -> tuple[Outcome, DeployAction]:
    running = backend.running_stable_version()
    if champion is None:
        record.note("no champion yet: first deployment, served as stable after a smoke check")
        backend.start_stable(verified)
        try:
            _require_parity(backend, "stable", verified, config, record)
            _smoke_check(backend.endpoint, verified.served_model_name, config.smoke_requests)
        except StageError as exc:
            backend.stop_all()  # an unproven first stable serves nobody
            _record_refusal(exc, backend, work_dir, record, client, model)
            raise
        _move_champion(client, model, config.champion_alias, record)
        return "PASS", "first_deployment"
    if champion == verified.version:
        if running != verified.version:
            backend.start_stable(verified)
            _require_stable_parity(backend, verified, config, work_dir, record, client, model)
            _smoke_check(backend.endpoint, verified.served_model_name, config.smoke_requests)
        record.note(f"version {champion} is already the champion: nothing to decide")
        return "PASS", "already_serving"
    if running is None:
        champion_uri = f"models:/{model.registered_model_name}/{champion}"
        record.note(f"no stable running: starting the champion {champion_uri} (verified first)")
        stable = verify_for_serving(champion_uri, _digest_of(client, model, champion), config,
                                    settings, work_dir, verified.served_model_name)
        backend.start_stable(stable)
        _require_stable_parity(backend, stable, config, work_dir, record, client, model)
    elif running != champion:
        record.note(f"the running stable serves version {running}, the champion is {champion}: "
                    "judging against what users get now")
    record.data["stable_before"] = {"model_uri": f"models:/{model.registered_model_name}/"
                                                 f"{backend.running_stable_version()}"}
    backend.start_canary(verified)
    try:  # at weight 0 still: a canary that serves another model never takes traffic
        _require_parity(backend, "canary", verified, config, record)
    except StageError as exc:
        backend.rollback_canary()
        _record_refusal(exc, backend, work_dir, record, client, model)
        raise
    _inject_faults(backend, config, record)
    report = _run_with_load(backend, config, verified.served_model_name, work_dir)
    record.add_rollout(report)
    if report.outcome == "PASS":
        # Before the canary takes all traffic: a champion moved behind this deploy's back
        # refuses the promotion (and the canary is rolled back), not just the alias write.
        check_champion_unmoved(client, model.registered_model_name, config.champion_alias,
                               champion, model.version)
        backend.promote_canary()
        _move_champion(client, model, config.champion_alias, record)
        return "PASS", "promoted"
    backend.rollback_canary()
    return report.outcome, "rolled_back"


def _require_parity(backend: Backend, role: str, model: VerifiedModel, config: DeployConfig,
                    record: DecisionRecord) -> None:
    """Served = evaluated (deploy/parity.py) for the engine just started on track `role`,
    before it takes traffic; DEPLOY_SERVED_MODEL_MISMATCH when it serves another model. The
    caller stops the engine. Recorded in the decision record under `parity.<role>`."""
    checks = record.data.setdefault("parity", {
        "prompts_version": parity.PROMPTS_VERSION, "prompts_sha256": parity.PROMPTS_SHA256,
        "max_tokens": config.parity_max_tokens, "tolerance": config.parity_logprob_tolerance,
        "max_logprob_diff_allowed": config.parity_max_logprob_diff})
    if not config.parity_check:
        checks[role] = {"skipped": "deploy.parity_check is false"}
        return
    url = backend.track_url(role)
    if url is None:
        reason = (f"the {role} engine cannot be reached around the traffic split from where "
                  "the stage runs: not checked (docs/stages/deploy_canary.md, 'What is "
                  "verified where')")
        record.note(f"served-model parity: {reason}")
        logger.warning("served-model parity: %s", reason)
        checks[role] = {"skipped": reason}
        return
    result = parity.check_engine(url, model.served_model_name, model.model_dir,
                                 max_tokens=config.parity_max_tokens,
                                 tolerance=config.parity_logprob_tolerance,
                                 max_logprob_diff=config.parity_max_logprob_diff)
    checks[role] = {"model_uri": model.model_uri, **result.to_dict()}
    logger.info("served-model parity of the %s engine (%s): %s, %d tokens compared, max "
                "logprob diff %.3g, %.1f s", role, model.model_uri,
                "matched" if result.matched else "MISMATCH", result.num_tokens_compared,
                result.max_logprob_diff, result.seconds)
    if not result.matched:
        consequence = ("The canary was rolled back at weight 0" if role == "canary" else
                       "The engine was stopped") + "; the champion alias did not move."
        raise parity.mismatch_error(result, role, model.model_uri, model.digest, consequence)


def _require_stable_parity(backend: Backend, stable: VerifiedModel, config: DeployConfig,
                           work_dir: Path, record: DecisionRecord, client: Any,
                           model: ModelToDeploy) -> None:
    """A (re)started champion stable is checked too; one that fails serves nobody."""
    try:
        _require_parity(backend, "stable", stable, config, record)
    except StageError as exc:
        backend.stop_all()
        _record_refusal(exc, backend, work_dir, record, client, model)
        raise


def _record_refusal(exc: StageError, backend: Backend, work_dir: Path,
                    record: DecisionRecord, client: Any, model: ModelToDeploy) -> None:
    """A served-model mismatch is a decision about what serves: write its decision record
    (outcome FAIL, action `refused`) before the error propagates, and name it there."""
    if exc.code != "DEPLOY_SERVED_MODEL_MISMATCH":
        return
    record.note(exc.message)
    try:
        endpoint = backend.endpoint
    except StageError:  # the local backend's router was stopped with the refused stable
        endpoint = ""
    record.finish("FAIL", "refused", endpoint, backend.describe())
    path = write_record(work_dir, record.data)
    exc.details["decision_record"] = str(path)
    exc.details["decision_record_uri"] = log_to_mlflow(client, model, record.data)


def _run_with_load(backend: Backend, config: DeployConfig, served: str,
                   work_dir: Path) -> RolloutReport:
    # work_dir: the controller publishes its progress there and obeys `shipyard promote|...`
    controller = CanaryController(backend, backend.metrics_source(), config, work_dir=work_dir)
    if not backend.needs_load_generator:
        return controller.run()  # a cluster has its own traffic
    per_step = config.bake_seconds + config.max_extra_bake_seconds
    spec = LoadSpec(config.load_requests_per_second, config.load_concurrency,
                    config.load_max_requests, per_step * len(config.steps) + 30,
                    config.load_max_tokens)
    with LoadGenerator(backend.endpoint, served, load_eval_prompts(), spec) as load:
        report = controller.run()
    logger.info("load during rollout: %s", load.result.to_dict())
    report.timeline.append({"load": load.result.to_dict()})
    return report


def _inject_faults(backend: Backend, config: DeployConfig, record: DecisionRecord) -> None:
    if not (config.inject_canary_latency_seconds or config.inject_canary_error_rate):
        backend.inject_faults(None)  # a long-lived router outlives deploys: no leftover drill
        return
    fault = FaultSpec(added_latency_seconds=config.inject_canary_latency_seconds,
                      error_rate=config.inject_canary_error_rate)
    backend.inject_faults(fault)
    record.note(f"fault injected on the canary: {fault}")


def _smoke_check(endpoint: str, served: str, num_requests: int) -> None:
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


def _digest_of(client: Any, model: ModelToDeploy, version: str) -> str:
    tags = dict(client.get_model_version(model.registered_model_name, version).tags)
    return str(tags.get(reg.TAG_MODEL_DIGEST, ""))


def _move_champion(client: Any, model: ModelToDeploy, champion_alias: str,
                   record: DecisionRecord) -> None:
    # Compare-and-set against the value read when this deploy started (CHAMPION_MOVED).
    move_champion(client, model.registered_model_name, model.version, champion_alias,
                  expected_current=record.data["champion"]["before"])
    record.data["champion"].update({"after": model.version, "moved": True,
                                    "moved_at": datetime.now(UTC).isoformat()})


def _history_keys(settings: Settings) -> tuple[KeyPair | None, Path | None]:
    """The registry's key pair signs the history when this machine has it (key mode)."""
    keys = settings.keys_dir
    private, public = keys / PRIVATE_KEY_NAME, keys / PUBLIC_KEY_NAME
    if private.is_file() and public.is_file():
        return KeyPair(private, public), public
    return None, public if public.is_file() else None


def _check_champion_in_history(champion: str | None, work_dir: Path, settings: Settings,
                               alias: str, *, anchor: history.Anchor | None = None) -> None:
    """Once a history exists, the alias must name a version the history made champion: an
    alias set (or removed) behind Shipyard's back is refused, never taken as a first
    deployment or as already serving. The history itself must verify (signatures, sequence,
    deployment) and reach the head `anchor` records (deploy/history.py)."""
    entries = history.read_history(work_dir, public_key_path=_history_keys(settings)[1],
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


def _append_history(work_dir: Path, settings: Settings, action: str, version: str,
                    digest: str, record_path: Path) -> None:
    if action not in ("promoted", "rolled_back", "first_deployment", "undo", "served"):
        return  # already_serving: nothing moved, nothing was decided about traffic
    key_pair, public_key = _history_keys(settings)
    # The record names the registered model whose tag anchors the history's head.
    model_uri = str(json.loads(record_path.read_text())["model_uri"])
    registered = model_uri.removeprefix("models:/").rsplit("/", 1)[0]
    client = reg.client_for(settings.mlflow_tracking_uri)
    anchor = history.read_anchor(client, registered, work_dir.name)
    entry = history.append_entry(
        work_dir, action=action,  # type: ignore[arg-type]  # checked just above
        version=version, digest=digest,
        decision_record_sha256=sha256_file(record_path),
        actor=f"{getpass.getuser()}@{socket.gethostname()}",
        key_pair=key_pair, public_key_path=public_key, anchor=anchor)
    history.write_anchor(client, registered, work_dir.name, entry)


def _safe_rollback(backend: Backend) -> None:
    try:
        backend.rollback_canary()
    except Exception:  # already failing: keep the first error, log this one
        logger.exception("rollback after a failed rollout also failed")


def _print_summary(name: str, served: str, record: dict[str, Any], path: Path,
                   backend: Backend) -> None:
    lines = [
        f"[shipyard] deploy {name}: {record['outcome']} ({record['action']})",
        f"[shipyard]   endpoint:  {backend.endpoint}/v1  (model name {served!r})",
        f"[shipyard]   engine:    {record['engine']}",
        f"[shipyard]   champion:  {record['champion']['before']} -> {record['champion']['after']}",
        f"[shipyard]   decision:  {path}",
        f"[shipyard]   stop with: {backend.stop_command()}",
    ]
    print("\n".join(lines), flush=True)
