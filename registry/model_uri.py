"""`models:/NAME/VERSION` and `models:/NAME@ALIAS`: the one parser of a registry model URI.

Stdlib only (plus the error and digest helpers), so the CLI can parse a URI without importing
MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.digests import sha256_digest
from registry.errors import RegistryError

SCHEME = "models:/"


@dataclass(frozen=True)
class ModelUri:
    """A registered model and exactly one of a version number or an alias."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelUri:
        """`models:/NAME/VERSION` (a number) or `models:/NAME@ALIAS`; NAME may hold slashes.
        Raises RegistryError MODEL_URI_INVALID (check "resolve") for anything else."""
        rest = text.removeprefix(SCHEME)
        if rest != text:
            if "@" in rest and "/" not in rest:
                name, _, alias = rest.partition("@")
                if name and alias:
                    return cls(name, alias=alias)
            name, _, version = rest.rpartition("/")
            if name and version.isdigit():
                return cls(name, version=version)
        raise RegistryError(
            "MODEL_URI_INVALID",
            f"{text!r}: expected models:/NAME@ALIAS (e.g. models:/shipyard-tiny@challenger) "
            "or models:/NAME/VERSION.",
            check="resolve",
        )

    @property
    def version_or_alias(self) -> str:
        return self.version if self.version is not None else str(self.alias)

    def __str__(self) -> str:
        if self.version is not None:
            return f"{SCHEME}{self.name}/{self.version}"
        return f"{SCHEME}{self.name}@{self.alias}"


@dataclass(frozen=True)
class ModelReference:
    """One registered model version pinned to its bytes: `models:/NAME/VERSION` and the
    model-signing root digest its `model_digest` tag names. What a stage hands the next when
    it means "this version, with these files" (evaluate's champion; printed as
    `models:/NAME/VERSION sha256:<digest>`). Checked on construction, so a Flyte literal that
    was altered between tasks is refused where it is read back."""

    name: str
    version: str
    model_digest: str

    def __post_init__(self) -> None:
        ModelUri.parse(f"{SCHEME}{self.name}/{self.version}")  # MODEL_URI_INVALID otherwise
        sha256_digest(self.model_digest, f"{SCHEME}{self.name}/{self.version} model_digest")

    @property
    def uri(self) -> ModelUri:
        return ModelUri(self.name, version=self.version)

    def __str__(self) -> str:
        return f"{self.uri} sha256:{self.model_digest}"


@dataclass(frozen=True)
class ChampionReference:
    """Which champion a comparison is (or was) made against: a pinned version, or none (no
    model name configured, or the alias is not set yet). A typed Flyte value: it is part of
    evaluate's cache key, so a moved champion alias re-runs the comparison."""

    # None: there is no champion to compare against
    model: ModelReference | None = None

    def __str__(self) -> str:
        return str(self.model) if self.model is not None else "none"
