"""Named presets and overrides: defaults < preset YAML < CLI overrides.

A preset is a YAML file under ``configs/`` with one section per stage (``data``, ``train``,
...). Each section is turned into that stage's own config dataclass; unknown keys are errors,
never silently dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import reprlib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from common.errors import StageError
from common.settings import PROJECT_ROOT

CONFIGS_DIR = PROJECT_ROOT / "configs"

T = TypeVar("T")

logger = logging.getLogger(__name__)


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


class _Yaml12FloatLoader(yaml.SafeLoader):
    """PyYAML implements YAML 1.1, whose float rule needs a dot and a signed exponent: `5e-5`
    and `1e3` load as strings there. YAML 1.2 (and every user typing a learning rate) reads
    them as numbers; this loader does too. Everything else resolves as in `yaml.safe_load`."""


_Yaml12FloatLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


# What an error message echoes of a value: bounded, so a hostile preset (YAML aliases expand a
# few hundred bytes into an exponentially large structure) cannot make an 80 MB message.
# reprlib never builds the whole repr; it stops at these depths and lengths.
_SHOWN = reprlib.Repr()  # keyword arguments need Python 3.12
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 3, 80, 80, 40
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 6
MAX_SHOWN_CHARACTERS = 200


def shown(value: Any) -> str:
    """`repr(value)` for an error message, at most MAX_SHOWN_CHARACTERS long."""
    text = _SHOWN.repr(value)
    if len(text) > MAX_SHOWN_CHARACTERS:
        text = text[:MAX_SHOWN_CHARACTERS] + "..."
    return text


def parse_yaml(text: str) -> Any:
    """`yaml.safe_load` with YAML 1.2 floats (`5e-5` is a number): presets and overrides."""
    return yaml.load(text, Loader=_Yaml12FloatLoader)  # a SafeLoader subclass: no tags run code


def load_preset(preset: str, overrides: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Load a preset and apply ``section.key=value`` overrides (values parsed as YAML)."""
    path = preset_path(preset)
    try:
        raw = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise StageError("CONFIG_INVALID", f"preset {path}: not valid YAML ({exc}). Fix the "
                         "file's syntax (yamllint shows where).") from exc
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
        try:
            parsed = parse_yaml(value)
        except yaml.YAMLError as exc:
            raise StageError(
                "CONFIG_OVERRIDE_INVALID",
                f"override {override!r}: the value is not valid YAML ({exc}). Quote strings "
                "with special characters, e.g. data.train_path='\"a: b.jsonl\"'.",
            ) from exc
        _set_dotted(raw.setdefault(section, {}), override, field, parsed)
    return raw


def _set_dotted(values: dict[str, Any], override: str, field: str, parsed: Any) -> None:
    """`field` may name a key of a nested section: `judge.min_kappa` sets values["judge"]."""
    *parents, leaf = field.split(".")
    for parent in parents:
        values = values.setdefault(parent, {})
        if not isinstance(values, dict) or not parent or not leaf:
            raise StageError(
                "CONFIG_OVERRIDE_INVALID",
                f"override {override!r}: {parent!r} is not a section here; expected "
                "SECTION.FIELD=VALUE or SECTION.SUBSECTION.FIELD=VALUE, e.g. "
                "eval.judge.min_kappa=0.5.",
            )
    values[leaf] = parsed


def build_config(cls: type[T], section: str, values: dict[str, Any],
                 renamed: Mapping[str, str] | None = None) -> T:
    """Build dataclass `cls` from a preset section; unknown keys and wrong types are errors.

    A field typed as a dataclass is a nested section (``eval.judge``): its mapping is built
    the same way, and its errors name the full dotted key (``eval.judge.min_kappa``).
    `renamed` maps deprecated keys to their new key one section down (e.g.
    ``judge_min_kappa`` -> ``judge.min_kappa``): the old key keeps working for one release,
    with a deprecation line; giving both is an error."""
    values = _renamed(section, values, renamed or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise StageError(
            "CONFIG_UNKNOWN_KEY",
            f"config section {section!r}: unknown key(s) {shown(unknown)}. Known keys: "
            f"{sorted(fields)}.",
        )
    hints = typing.get_type_hints(cls)
    built: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{section}.{name}"
        if dataclasses.is_dataclass(hints[name]):
            built[name] = _build_section(hints[name], key, value)
            continue
        _check_type(key, value, hints[name])
        _check_range(key, value)
        built[name] = value
    return cls(**built)


def _build_section(cls: type[Any], key: str, value: Any) -> Any:
    if not isinstance(value, dict):
        raise StageError(
            "CONFIG_TYPE",
            f"config {key}={shown(value)}: expected a section (a mapping of "
            f"{cls.__name__} keys), got {type(value).__name__}.",
        )
    return build_config(cls, key, value)


def _renamed(section: str, values: dict[str, Any], renames: Mapping[str, str]
             ) -> dict[str, Any]:
    """Move renamed keys to their new place, with a deprecation line; an old key and its new
    form both given is an error, never a silent choice."""
    if not set(values) & set(renames):
        return values
    out = {name: dict(v) if isinstance(v, dict) else v for name, v in values.items()}
    for old, new in renames.items():
        if old not in out:
            continue
        parent, _, leaf = new.partition(".")
        target = out.setdefault(parent, {})
        if not isinstance(target, dict):
            raise StageError(
                "CONFIG_TYPE",
                f"config {section}.{parent}={shown(target)}: expected a section (a mapping), "
                f"got {type(target).__name__}.",
            )
        if leaf in target:
            raise StageError(
                "CONFIG_INVALID",
                f"config {section}.{old} and {section}.{new} are both given (in the preset or "
                f"an override): {section}.{old} is the deprecated spelling of {section}.{new}. "
                f"Keep only {section}.{new}.",
            )
        logger.warning("config %s.%s is deprecated and will be removed in the next release: "
                       "use %s.%s (the stage's docs page, \"Migrating presets\").",
                       section, old, section, new)
        target[leaf] = out.pop(old)
    return out


# A duration beyond a week is a typo (seconds for milliseconds, an extra zero), not a plan.
MAX_DURATION_SECONDS = 7 * 24 * 3600.0


def _check_type(key: str, value: Any, hint: Any) -> None:
    allowed = _allowed_types(hint)
    if allowed is not None and not _is_instance(value, allowed):
        names = " or ".join(t.__name__ for t in allowed)
        raise StageError(
            "CONFIG_TYPE",
            f"config {key}={shown(value)}: expected {names}, got {type(value).__name__}.",
        )
    if typing.get_origin(hint) is typing.Literal and value not in typing.get_args(hint):
        raise StageError(
            "CONFIG_INVALID",
            f"config {key}={shown(value)}: must be one of {list(typing.get_args(hint))}.",
        )
    # Elements of list[X] / tuple[X, ...] / dict[K, V] are checked too, each named.
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        matching = [a for a in args if _allowed_types(a) is None
                    or _is_instance(value, _allowed_types(a) or ())]
        if len(matching) == 1:
            _check_type(key, value, matching[0])
    elif origin in (list, tuple) and isinstance(value, list | tuple) and args:
        for index, element in enumerate(value):
            _check_type(f"{key}[{index}]", element, args[0])
    elif origin is dict and isinstance(value, dict) and len(args) == 2:
        for item_key, element in value.items():
            _check_type(f"{key} key {shown(item_key)}", item_key, args[0])
            _check_type(f"{key}[{shown(item_key)}]", element, args[1])


def _is_instance(value: Any, allowed: tuple[type, ...]) -> bool:
    # bool is an int subclass: `true` is never a count, a size or a step number.
    if isinstance(value, bool):
        return bool in allowed
    # YAML reads `1` as int where a float is expected: accept ints for floats.
    return isinstance(value, allowed) or (float in allowed and isinstance(value, int))


def _check_range(key: str, value: Any) -> None:
    """Numbers are finite; durations (`*_seconds`) are >= 0 and at most a week."""
    if isinstance(value, float) and not math.isfinite(value):
        raise StageError("CONFIG_INVALID", f"config {key}={shown(value)}: must be a finite number.")
    if key.endswith("_seconds") and isinstance(value, int | float) \
            and not isinstance(value, bool) and not 0 <= value <= MAX_DURATION_SECONDS:
        raise StageError(
            "CONFIG_INVALID",
            f"config {key}={shown(value)}: a duration in seconds must be between 0 and "
            f"{MAX_DURATION_SECONDS:.0f} (one week).",
        )
    if isinstance(value, list | tuple):
        for index, element in enumerate(value):
            _check_range(f"{key}[{index}]", element)
    elif isinstance(value, dict):
        for item_key, element in value.items():
            _check_range(f"{key}[{shown(item_key)}]", element)


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
