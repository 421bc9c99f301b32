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

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from common.errors import StageError
from common.settings import Settings
from deploy.backend import Backend, roll_back_leftover_canary, safe_rollback
from deploy.config import DeployConfig
from deploy.controller import CanaryController, RolloutReport
from deploy.decision_record import DecisionRecord, start_record
from deploy.decision_record_schema import ChampionMove, StableBefore
from deploy.loadgen import LoadGenerator, LoadSpec, load_eval_prompts
from deploy.model_ref import ModelToDeploy, VerifiedModel
from deploy.outcomes import DeployAction, DeploymentResult, Outcome
from deploy.session import (
    DeploySession,
    check_champion_in_history,
    current_champion,
    digest_of,
    prune_model_copies,
    smoke_check,
    verify_for_serving,
)
from deploy.state import deployment_lock
from registry.aliases import check_champion_unmoved
from serving.router import FaultSpec

# Names other modules and tests import from here (the stage's public surface before the
# session module took them).
__all__ = ["Backend", "DeployOutcome", "check_champion_in_history", "current_champion",
           "deploy_canary", "deployment_lock", "prune_model_copies", "smoke_check",
           "verify_for_serving"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployOutcome(DeploymentResult):
    """The stage's result (the Flyte contract's `DeploymentResult`) and, beside it, the
    decision record it wrote."""

    record: DecisionRecord

    def result(self) -> DeploymentResult:
        return DeploymentResult(**{f.name: getattr(self, f.name)
                                   for f in dataclasses.fields(DeploymentResult)})


def deploy_canary(model: ModelToDeploy, config: DeployConfig, settings: Settings, *,
                  backend: Backend | None = None) -> DeployOutcome:
    """Verify, serve, canary, decide, record, in one deploy session (deploy/session.py: the
    deployment's lock, the champion checked against the signed history; SIGTERM rolls a
    started canary back before the process ends)."""
    name = config.deployment_name or model.registered_model_name
    record = start_record(name, model, config)
    with DeploySession.open(name, model.registered_model_name, config, settings,
                            record) as session:
        return _deploy(session, model, backend)


def _deploy(session: DeploySession, model: ModelToDeploy,
            given: Backend | None) -> DeployOutcome:
    served = session.config.served_model_name or model.registered_model_name
    # 1. Verify first: fail closed, nothing started yet. The eval evidence must be measured
    # against the champion this deploy would replace (DEPLOY_EVIDENCE_STALE).
    verified = session.verify(model.model_uri, model.model_digest, served,
                              evaluated_against=session.current_champion(model))
    backend = session.backend(verified, given)
    try:
        roll_back_leftover_canary(backend, session.record)
        outcome, action = _roll_out(session, backend, verified, model)
    except BaseException:
        # Whatever broke (SIGTERM included), a half-started canary must not keep taking
        # traffic or keep running.
        safe_rollback(backend)
        raise
    path, uri = session.finish(outcome, action, backend, model, verified.digest)
    record = session.record
    _print_summary(session.name, served, record, path, backend)
    return DeployOutcome(
        deployment_name=session.name, model_uri=model.model_uri,
        model_digest=model.model_digest, outcome=outcome, action=action,
        engine=str(record.engine), backend=session.config.backend,
        endpoint=backend.endpoint, served_model_name=served,
        champion_version=record.champion.after if record.champion else None,
        decision_record_path=str(path),
        decision_record_uri=uri, stop_command=backend.stop_command(), record=record)


def _roll_out(session: DeploySession, backend: Backend, verified: VerifiedModel,
              model: ModelToDeploy) -> tuple[Outcome, DeployAction]:
    config, record, champion = session.config, session.record, session.champion_before
    running = backend.running_stable_version()
    if champion is None:
        record.note("no champion yet: first deployment, served as stable after a smoke check")
        backend.start_stable(verified)
        # an unproven first stable serves nobody (a parity refusal stops it too)
        session.require_parity(backend, "stable", verified, model, stop_all=True)
        try:
            smoke_check(backend.endpoint, verified.served_model_name, config.smoke_requests)
        except StageError:
            backend.stop_all()
            raise
        session.move_champion(model)
        return "PASS", "first_deployment"
    if champion == verified.version:
        if running != verified.version:
            backend.start_stable(verified)
            session.require_parity(backend, "stable", verified, model, stop_all=True)
            smoke_check(backend.endpoint, verified.served_model_name, config.smoke_requests)
        record.note(f"version {champion} is already the champion: nothing to decide")
        return "PASS", "already_serving"
    if running is None:
        champion_uri = f"models:/{model.registered_model_name}/{champion}"
        record.note(f"no stable running: starting the champion {champion_uri} (verified first)")
        stable = verify_for_serving(champion_uri, digest_of(session.client, model, champion),
                                    config, session.settings, session.work_dir,
                                    verified.served_model_name)
        backend.start_stable(stable)
        session.require_parity(backend, "stable", stable, model, stop_all=True)
    elif running != champion:
        record.note(f"the running stable serves version {running}, the champion is {champion}: "
                    "judging against what users get now")
    record.stable_before = StableBefore(f"models:/{model.registered_model_name}/"
                                        f"{backend.running_stable_version()}")
    backend.start_canary(verified)
    # at weight 0 still: a canary that serves another model never takes traffic
    session.require_parity(backend, "canary", verified, model, stop_all=False)
    _inject_faults(backend, config, record)
    report = _run_with_load(backend, config, verified.served_model_name, session.work_dir)
    record.add_rollout(report)
    if report.outcome == "PASS":
        # Before the canary takes all traffic: a champion moved behind this deploy's back
        # refuses the promotion (and the canary is rolled back), not just the alias write.
        check_champion_unmoved(session.client, model.registered_model_name,
                               config.champion_alias, champion, model.version)
        backend.promote_canary()
        session.move_champion(model)
        return "PASS", "promoted"
    backend.rollback_canary()
    return report.outcome, "rolled_back"


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


def _print_summary(name: str, served: str, record: DecisionRecord, path: Path,
                   backend: Backend) -> None:
    champion = record.champion or ChampionMove(None, None, moved=False)
    lines = [
        f"[shipyard] deploy {name}: {record.outcome} ({record.action})",
        f"[shipyard]   endpoint:  {backend.endpoint}/v1  (model name {served!r})",
        f"[shipyard]   engine:    {record.engine}",
        f"[shipyard]   champion:  {champion.before} -> {champion.after}",
        f"[shipyard]   decision:  {path}",
        f"[shipyard]   stop with: {backend.stop_command()}",
    ]
    print("\n".join(lines), flush=True)
