"""Named presets and overrides: defaults < preset YAML < CLI overrides.

A preset is a YAML file under ``configs/`` with one section per stage (``data``, ``train``,
...). Each section is turned into that stage's own config dataclass; unknown keys are errors,
never silently dropped.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from common.errors import StageError
from common.settings import PROJECT_ROOT

CONFIGS_DIR = PROJECT_ROOT / "configs"

T = TypeVar("T")


def preset_path(preset: str) -> Path:
    """`preset` is a name under configs/ (``tiny``) or a path to a YAML file."""
    candidate = Path(preset)
    if candidate.suffix in {".yaml", ".yml"}:
        path = candidate if candidate.is_absolute() else Path.cwd() / candidate
    else:
        path = CONFIGS_DIR / f"{preset}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))
        raise StageError(
            "CONFIG_PRESET_NOT_FOUND",
            f"preset {preset!r}: no file {path}. Use one of {names} or a path to a YAML file.",
        )
    return path


def load_preset(preset: str, overrides: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Load a preset and apply ``section.key=value`` overrides (values parsed as YAML)."""
    path = preset_path(preset)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise StageError(
            "CONFIG_INVALID",
            f"preset {path}: the top level must map section names (data, train, ...) to "
            "mappings of fields.",
        )
    for override in overrides or []:
        key, sep, value = override.partition("=")
        section, dot, field = key.strip().partition(".")
        if not sep or not dot or not field:
            raise StageError(
                "CONFIG_OVERRIDE_INVALID",
                f"override {override!r}: expected SECTION.FIELD=VALUE, e.g. train.max_steps=20.",
            )
        raw.setdefault(section, {})[field] = yaml.safe_load(value)
    return raw


def build_config(cls: type[T], section: str, values: dict[str, Any]) -> T:
    """Build dataclass `cls` from a preset section; unknown keys and wrong types are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise StageError(
            "CONFIG_UNKNOWN_KEY",
            f"config section {section!r}: unknown key(s) {unknown}. Known keys: {sorted(fields)}.",
        )
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        _check_type(section, name, value, hints[name])
    return cls(**values)


def _check_type(section: str, name: str, value: Any, hint: Any) -> None:
    allowed = _allowed_types(hint)
    if allowed is None or isinstance(value, allowed):
        return
    # YAML reads `1` as int where a float is expected: accept ints for floats, not bools.
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return
    names = " or ".join(t.__name__ for t in allowed)
    raise StageError(
        "CONFIG_TYPE",
        f"config {section}.{name}={value!r}: expected {names}, got {type(value).__name__}.",
    )


def _allowed_types(hint: Any) -> tuple[type, ...] | None:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        out: list[type] = []
        for arg in typing.get_args(hint):
            sub = _allowed_types(arg)
            if sub is None:
                return None
            out.extend(sub)
        return tuple(out)
    if origin is typing.Literal:
        return tuple({type(a) for a in typing.get_args(hint)})
    if origin is not None:
        return (origin,)
    if hint is type(None):
        return (type(None),)
    return (hint,) if isinstance(hint, type) else None
