"""The champion baseline: looked up by its alias, and verified before anything is measured.

The champion gets the same `registry.verify_model` deploy applies before serving a model
(signature, provenance, MLflow tags, policy): a baseline whose files or attestations do not
verify would make every comparison meaningless, so it stops the stage (fail-closed) rather
than being skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException

from common.digests import Sha256
from common.errors import StageError
from eval.config import EvalConfig
from eval.errors import EvalError
from registry.aliases import champion_version
from registry.errors import RegistryError
from registry.mlflow_registry import TAG_MODEL_DIGEST, client_for
from registry.model_uri import ChampionReference, ModelReference
from registry.policy import load_policy
from registry.signing import PUBLIC_KEY_NAME
from registry.verify import verify_model


@dataclass(frozen=True)
class Champion:
    # MLflow version number the champion alias pointed at when the stage looked.
    version: str
    # model-signing root digest of the verified files (= the version's model_digest tag).
    digest: Sha256
    # The verified files: evaluate these bytes, not a second download nothing checked.
    model_dir: Path


# `champion_reference` of a registered model without a champion (or with no model name).
NO_CHAMPION = ChampionReference()


def champion_reference(config: EvalConfig, tracking_uri: str) -> ChampionReference:
    """Which champion an evaluation would compare against, read from MLflow without
    downloading or verifying anything: the alias's version and the digest its `model_digest`
    tag names, or NO_CHAMPION.

    The pipeline reads it just before evaluate and hands it in as an input, so evaluate's cache
    key names its baseline: a re-run with the same candidate, data, config and champion is a
    cache hit, and a moved champion alias re-runs the comparison. `check_compared_against`
    makes sure evaluate measured against this very version. Raises EvalError
    EVAL_CHAMPION_LOOKUP_FAILED when MLflow cannot be read, or when the version's digest tag
    is not a digest (a version no registration of this project wrote)."""
    name = config.registered_model_name
    if name is None:
        return NO_CHAMPION
    client = client_for(tracking_uri)
    try:
        version = champion_version(client, name, config.champion_alias)
        if version is None:
            return NO_CHAMPION
        digest = client.get_model_version(name, version).tags.get(TAG_MODEL_DIGEST, "")
        return ChampionReference(ModelReference(name, version, digest))
    except (StageError, MlflowException) as exc:
        raise EvalError("EVAL_CHAMPION_LOOKUP_FAILED",
                        f"MLflow {tracking_uri}: cannot read alias {config.champion_alias!r} "
                        f"of {name!r} or its version: {getattr(exc, 'message', exc)}") from exc


def check_compared_against(reference: ChampionReference, name: str | None,
                           version: str | None, digest: str | None) -> None:
    """EvalError EVAL_CHAMPION_MOVED unless the champion an evaluation used (`version` and
    verified `digest` of `name`; all None without one) is the one `reference` names: a result
    measured against another baseline must not be stored under this reference's cache key."""
    compared = (NO_CHAMPION if name is None or version is None or digest is None
                else ChampionReference(ModelReference(name, version, digest)))
    if compared != reference:
        raise EvalError(
            "EVAL_CHAMPION_MOVED",
            f"the champion changed while evaluate ran: the pipeline looked up "
            f"{str(reference)!r} before the stage, the evaluation compared against "
            f"{str(compared)!r}. Another deploy or `shipyard undo`/`serve` moved the champion "
            "alias meanwhile; run the pipeline again to compare against the champion that "
            "serves now.",
            details={"looked_up": str(reference), "compared_against": str(compared)})


def load_champion(config: EvalConfig, tracking_uri: str, keys_dir: Path,
                  download_dir: Path) -> Champion | None:
    """The `champion_alias` version of `registered_model_name`, verified into `download_dir`;
    None when there is no champion yet (first registration, or no model name configured).

    Raises EvalError EVAL_CHAMPION_LOOKUP_FAILED when MLflow cannot be read and
    EVAL_CHAMPION_REJECTED (details: the failed `check`) when verification fails."""
    name = config.registered_model_name
    if name is None:
        return None
    try:
        version = champion_version(client_for(tracking_uri), name, config.champion_alias)
    except RegistryError as exc:
        raise EvalError("EVAL_CHAMPION_LOOKUP_FAILED",
                        f"MLflow {tracking_uri}: cannot read alias {config.champion_alias!r} "
                        f"of {name!r}: {exc.message}") from exc
    if version is None:
        return None
    # The version number, not the alias: the alias may move while the stage runs.
    model_uri = f"models:/{name}/{version}"
    public_key = (Path(config.public_key_path) if config.public_key_path
                  else keys_dir / PUBLIC_KEY_NAME)
    try:
        result = verify_model(model_uri, tracking_uri=tracking_uri,
                              policy=load_policy(config.policy_path, keys_dir=keys_dir),
                              public_key=public_key,
                              download_dir=download_dir)
    except RegistryError as exc:
        raise EvalError(
            "EVAL_CHAMPION_REJECTED",
            f"champion {model_uri} (alias {config.champion_alias!r}) failed verification "
            f"check {exc.check or exc.code!r}, so it is no baseline: {exc}. Move the alias "
            "to a version that verifies (`shipyard verify` shows why this one does not), or "
            "re-register it.",
            details={"check": exc.check, "expected": exc.expected, "found": exc.found,
                     "model_uri": model_uri}) from exc
    assert result.model_dir is not None  # download_dir was given
    return Champion(result.version, result.model_digest, result.model_dir)
