"""`models:/NAME/VERSION` and `models:/NAME@ALIAS`: the one parser of a registry model URI.

Stdlib only (plus the error type), so the CLI can parse a URI without importing MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass

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
