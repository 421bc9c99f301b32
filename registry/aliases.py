"""The MLflow aliases of a registered model: the one place that reads, compares and moves them.

Two aliases carry meaning in Shipyard:

  challenger  the newest registered version that passed its checks; set by `register`
  champion    the version serving users; read by `evaluate` (the baseline) and `deploy`
              (the stable track), moved only by `deploy` after a canary passed

The champion alias's name is configurable (`register.champion_alias`, handed to every stage
by `tasks/resolve.py`), so every function here takes it as an argument; `challenger` is fixed.
Alias values come back as ints from some stores: every version here is a string.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from registry.errors import RegistryError

if TYPE_CHECKING:  # mlflow is imported where it is used: stage configs import this module
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

CHALLENGER_ALIAS = "challenger"
DEFAULT_CHAMPION_ALIAS = "champion"
# MLflow's own rule for alias names, minus the names it reserves (`latest`, `vN`).
_ALIAS_PATTERN = re.compile(r"^[\w\-]+$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)


def check_champion_alias(alias: str) -> str:
    """`alias` if it can name the champion; RegistryError CONFIG_INVALID otherwise."""
    if not _ALIAS_PATTERN.match(alias) or _RESERVED_ALIAS.match(alias):
        raise RegistryError(
            "CONFIG_INVALID",
            f"champion alias {alias!r}: use letters, digits, '_' or '-', and not 'latest' or "
            "'v<number>' (MLflow reserves them), e.g. 'champion'.",
        )
    if alias == CHALLENGER_ALIAS:
        raise RegistryError(
            "CONFIG_INVALID",
            f"champion alias {alias!r} is the alias `register` sets on every new version: "
            "pick another name, e.g. 'champion'.",
        )
    return alias


def alias_versions(client: MlflowClient, name: str) -> dict[str, str]:
    """Every alias of registered model `name` -> its version; {} when `name` does not exist.

    Read from the registered model: search results do not carry aliases."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise RegistryError(
            "ALIAS_LOOKUP_FAILED",
            f"cannot read the aliases of registered model {name!r}: {exc.message}",
        ) from exc
    return {alias: str(version) for alias, version in aliases.items()}


def champion_version(
    client: MlflowClient, name: str, champion_alias: str = DEFAULT_CHAMPION_ALIAS
) -> str | None:
    """The version `champion_alias` points at; None before the first deployment (no model or
    no alias yet)."""
    return alias_versions(client, name).get(champion_alias)


def set_challenger(
    client: MlflowClient,
    name: str,
    version: str,
    champion_alias: str = DEFAULT_CHAMPION_ALIAS,
) -> bool:
    """Point `challenger` at `version`; never touches the champion. False if not moved."""
    if champion_version(client, name, champion_alias) == str(version):
        logger.info(
            "%s version %s is already the %s: `%s` not moved",
            name, version, champion_alias, CHALLENGER_ALIAS,
        )
        return False
    client.set_registered_model_alias(name, CHALLENGER_ALIAS, str(version))
    return True


def move_champion(
    client: MlflowClient,
    name: str,
    version: str,
    champion_alias: str = DEFAULT_CHAMPION_ALIAS,
    *,
    expected_current: str | None,
) -> None:
    """Point the champion alias at `version`, by compare-and-set: only if it still points at
    `expected_current` (None: no champion yet), the value the caller read when it decided.
    Only deploy calls this, after a passed canary (or a smoke-checked first deployment).

    MLflow has no conditional alias update: the read and the write are two calls. Deploys of
    one deployment are serialized by their lock, so what remains is a writer outside Shipyard
    (MLflow UI, API) moving the alias in the milliseconds between them. There is no
    unchecked form: every caller says what it read."""
    check_champion_unmoved(client, name, champion_alias, expected_current, version)
    client.set_registered_model_alias(name, champion_alias, str(version))


def check_champion_unmoved(client: MlflowClient, name: str, champion_alias: str,
                           expected: str | None, incoming: str) -> None:
    """CHAMPION_MOVED unless the alias still names `expected` (None: no champion). Deploy
    calls it before the canary takes all traffic, and `move_champion` again before writing."""
    current = champion_version(client, name, champion_alias)
    expected = None if expected is None else str(expected)
    if current != expected:
        raise RegistryError(
            "CHAMPION_MOVED",
            f"the {champion_alias!r} alias of {name!r} moved while this deploy ran (it read "
            f"version {expected}, the alias now names {current}): refusing to overwrite it "
            f"with version {incoming}. Find who moved it (`shipyard history`, the MLflow audit "
            "log), then deploy again.",
            expected=str(expected),
            found=str(current),
        )


def aliases_of(client: MlflowClient, name: str, version: str) -> list[str]:
    """The aliases on one version, sorted."""
    # search_model_versions returns empty aliases; get_model_version fills them in.
    return sorted(client.get_model_version(name, version).aliases)
