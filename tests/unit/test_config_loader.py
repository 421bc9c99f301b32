"""The preset loader: defaults < preset YAML < overrides, and every bad input is a coded error.

Tested through the plain functions the `resolve_config` task wraps (`tasks.resolve.resolve`)
and the loader beneath it (`common.config.load_preset`, `build_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from common.config import build_config, load_preset
from common.errors import StageError
from data.config import DataConfig
from eval.config import EvalConfig, GateConfig
from tasks.resolve import resolve
from training.config import TrainConfig

pytestmark = pytest.mark.unit


def write_preset(tmp_path: Path, text: str) -> str:
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    return str(path)


# ---- precedence --------------------------------------------------------------------------


def test_defaults_then_preset_then_overrides() -> None:
    resolved = resolve("tiny", ["train.max_steps=5"])
    # default (tiny.yaml has no weight_decay), preset value, override value
    assert resolved.train.weight_decay == TrainConfig().weight_decay
    assert resolved.train.warmup_steps == 20
    assert resolved.train.max_steps == 5
    assert resolved.eval.gate.hard_ceilings == {"shipyard_ppl": 1.0}


def test_later_override_wins(tmp_path: Path) -> None:
    preset = write_preset(tmp_path, "train:\n  max_steps: 7\n")
    raw = load_preset(preset, ["train.max_steps=3", "train.max_steps=4"])
    assert build_config(TrainConfig, "train", raw["train"]).max_steps == 4


def test_override_values_are_yaml(tmp_path: Path) -> None:
    preset = write_preset(tmp_path, "eval: {}\n")
    raw = load_preset(preset, [
        "eval.limit_per_task=null",
        "eval.tasks=[shipyard_scoring_check, shipyard_ppl]",
        "eval.gate.hard_ceilings={shipyard_ppl: 2}",
        "eval.gate.non_inferiority_margins={shipyard_ppl: 0.1}",
        "train.compile=false",
        " train.seq_len = 64",  # spaces around the key and the value are ignored
    ])
    evaluation = build_config(EvalConfig, "eval", raw["eval"])
    assert evaluation.limit_per_task is None  # "unset" is None, never 0
    assert evaluation.tasks == ["shipyard_scoring_check", "shipyard_ppl"]
    assert evaluation.gate.hard_ceilings == {"shipyard_ppl": 2}
    train = build_config(TrainConfig, "train", raw["train"])
    assert train.compile is False
    assert train.seq_len == 64


def test_override_creates_a_section_the_preset_lacks(tmp_path: Path) -> None:
    preset = write_preset(tmp_path, "data: {}\n")
    assert load_preset(preset, ["train.max_steps=9"])["train"] == {"max_steps": 9}


def test_empty_preset_gives_defaults(tmp_path: Path) -> None:
    preset = write_preset(tmp_path, "")
    assert load_preset(preset) == {}
    assert build_config(DataConfig, "data", {}) == DataConfig()


def test_relative_preset_path_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_preset(tmp_path, "train:\n  max_steps: 11\n")
    monkeypatch.chdir(tmp_path)
    assert load_preset("preset.yaml")["train"]["max_steps"] == 11


# ---- missing preset ----------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["no-such-preset", "missing/preset.yaml"])
def test_missing_preset(preset: str) -> None:
    with pytest.raises(StageError) as info:
        load_preset(preset)
    assert info.value.code == "CONFIG_PRESET_NOT_FOUND"
    # The message lists the presets there are, so the user can pick one.
    assert "tiny" in info.value.message


def test_missing_preset_through_resolve() -> None:
    with pytest.raises(StageError) as info:
        resolve("no-such-preset", [])
    assert info.value.code == "CONFIG_PRESET_NOT_FOUND"


# ---- malformed presets and overrides -----------------------------------------------------


@pytest.mark.parametrize("text", ["- a\n- b\n", "train: 5\n", "just a string\n"])
def test_preset_top_level_must_map_sections(tmp_path: Path, text: str) -> None:
    with pytest.raises(StageError) as info:
        load_preset(write_preset(tmp_path, text))
    assert info.value.code == "CONFIG_INVALID"


@pytest.mark.parametrize(
    "override",
    ["train.max_steps", "max_steps=5", "train.=5", "train=5", "", "=5"],
)
def test_override_syntax_errors(override: str) -> None:
    with pytest.raises(StageError) as info:
        load_preset("tiny", [override])
    assert info.value.code == "CONFIG_OVERRIDE_INVALID"
    assert "SECTION.FIELD=VALUE" in info.value.message


def test_override_value_yaml_syntax_error_is_a_coded_error() -> None:
    try:
        load_preset("tiny", ["train.max_steps=[1"])
    except StageError as exc:
        assert exc.code == "CONFIG_OVERRIDE_INVALID"
    else:
        pytest.fail("a malformed override value was accepted")


def test_preset_yaml_syntax_error_is_a_coded_error(tmp_path: Path) -> None:
    preset = write_preset(tmp_path, "train: {max_steps: 5\n")
    try:
        load_preset(preset)
    except StageError as exc:
        assert exc.code == "CONFIG_INVALID"
    else:
        pytest.fail("a malformed preset was accepted")


def test_unknown_section_from_override() -> None:
    with pytest.raises(StageError) as info:
        resolve("tiny", ["trian.max_steps=5"])
    assert info.value.code == "CONFIG_UNKNOWN_KEY"
    assert "trian" in info.value.message


def test_unknown_section_in_preset(tmp_path: Path) -> None:
    with pytest.raises(StageError) as info:
        resolve(write_preset(tmp_path, "serve:\n  port: 1\n"), [])
    assert info.value.code == "CONFIG_UNKNOWN_KEY"


# ---- unknown keys and wrong types --------------------------------------------------------


def test_unknown_key_is_an_error_not_dropped() -> None:
    with pytest.raises(StageError) as info:
        build_config(TrainConfig, "train", {"max_step": 5})
    assert info.value.code == "CONFIG_UNKNOWN_KEY"
    assert "max_step" in info.value.message and "max_steps" in info.value.message


def test_unknown_key_through_resolve() -> None:
    with pytest.raises(StageError) as info:
        resolve("tiny", ["deploy.bake_secs=3"])
    assert info.value.code == "CONFIG_UNKNOWN_KEY"


@pytest.mark.parametrize(
    ("section", "cls", "values"),
    [
        ("train", TrainConfig, {"max_steps": "20"}),          # str for int
        ("train", TrainConfig, {"max_steps": 2.5}),           # float for int
        ("train", TrainConfig, {"learning_rate": "fast"}),    # str for float
        ("train", TrainConfig, {"learning_rate": True}),      # bool is not a float
        ("train", TrainConfig, {"compile": 1}),               # int for bool
        ("train", TrainConfig, {"base_model_dir": 3}),        # int for str | None
        ("data", DataConfig, {"train_path": None}),           # None where None is not allowed
        ("eval", EvalConfig, {"tasks": "shipyard_ppl"}),      # str for list
        ("eval.gate", GateConfig, {"hard_ceilings": [1.0]}),  # list for dict
    ],
)
def test_wrong_type(section: str, cls: type, values: dict) -> None:
    with pytest.raises(StageError) as info:
        build_config(cls, section, values)
    assert info.value.code == "CONFIG_TYPE"
    name = next(iter(values))
    assert f"{section}.{name}" in info.value.message


def test_wrong_type_through_resolve() -> None:
    with pytest.raises(StageError) as info:
        resolve("tiny", ["train.max_steps=many"])
    assert info.value.code == "CONFIG_TYPE"


def test_int_accepted_where_a_float_is_expected() -> None:
    # YAML reads `1` as an int; a float field takes it.
    assert build_config(TrainConfig, "train", {"learning_rate": 1}).learning_rate == 1


def test_optional_fields_take_none() -> None:
    assert build_config(TrainConfig, "train", {"checkpoint_dir": None}).checkpoint_dir is None


def test_bool_is_not_an_int() -> None:
    with pytest.raises(StageError) as info:
        build_config(TrainConfig, "train", {"max_steps": True})
    assert info.value.code == "CONFIG_TYPE"


@dataclass
class Sample:
    mode: Literal["a", "b"] = "a"
    ratio: float | None = None
    names: list[str] = field(default_factory=list)


def test_literal_and_union_hints() -> None:
    assert build_config(Sample, "s", {"mode": "b", "ratio": None}).mode == "b"
    with pytest.raises(StageError) as info:
        build_config(Sample, "s", {"mode": 1})
    assert info.value.code == "CONFIG_TYPE"
    with pytest.raises(StageError) as info:
        build_config(Sample, "s", {"ratio": "x"})
    assert info.value.code == "CONFIG_TYPE"


def test_stage_validation_runs_after_the_type_check() -> None:
    # A well-typed value the stage's own rule rejects is CONFIG_INVALID, not CONFIG_TYPE.
    with pytest.raises(StageError) as info:
        resolve("tiny", ["train.max_steps=0"])
    assert info.value.code == "CONFIG_INVALID"


@pytest.mark.parametrize(("override", "code", "key"), [
    ("eval.gate.bootstrap_resamples=.nan", "CONFIG_TYPE", "eval.gate.bootstrap_resamples"),
    ("eval.gate.confidence=.nan", "CONFIG_INVALID", "eval.gate.confidence"),
    ("deploy.bake_seconds=.inf", "CONFIG_INVALID", "deploy.bake_seconds"),
    ("deploy.bake_seconds=-5", "CONFIG_INVALID", "deploy.bake_seconds"),
    ("deploy.bake_seconds=99999999", "CONFIG_INVALID", "deploy.bake_seconds"),
    ("train.max_steps=true", "CONFIG_TYPE", "train.max_steps"),
])
def test_hostile_numbers_are_refused_with_the_key_named(override: str, code: str,
                                                        key: str) -> None:
    with pytest.raises(StageError) as info:
        resolve("tiny", [override])
    assert info.value.code == code
    assert key in info.value.message


def test_list_elements_of_the_wrong_type_are_refused_with_their_index() -> None:
    with pytest.raises(StageError) as info:
        resolve("tiny", ["eval.tasks=[shipyard_mc, 3]"])
    assert info.value.code == "CONFIG_TYPE"
    assert "eval.tasks[1]" in info.value.message


# ---- numbers as users type them ------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("5e-5", 5e-5), ("1e3", 1000.0), ("-2E+4", -20000.0), ("3.0e-3", 3e-3), (".5", 0.5)])
def test_exponent_floats_are_numbers_in_presets(tmp_path: Path, text: str,
                                                expected: float) -> None:
    # YAML 1.1 (PyYAML's default) reads `5e-5` as a string; users type numbers that way
    preset = write_preset(tmp_path, f"train:\n  weight_decay: {text}\n")
    assert load_preset(preset)["train"]["weight_decay"] == expected


def test_a_learning_rate_typed_as_5e_5_is_accepted() -> None:
    resolved = resolve("tiny", ["train.learning_rate=5e-5", "train.min_learning_rate=5e-6"])
    assert (resolved.train.learning_rate, resolved.train.min_learning_rate) == (5e-5, 5e-6)


def test_words_that_look_like_numbers_stay_strings() -> None:
    raw = load_preset("tiny", ["register.registered_model_name=1e", "deploy.engine=e5"])
    assert raw["register"]["registered_model_name"] == "1e"
    assert raw["deploy"]["engine"] == "e5"


def test_a_hostile_preset_cannot_make_a_huge_error_message(tmp_path: Path) -> None:
    # ~400 bytes of YAML aliases expand into 9^8 list elements; the error echoes a bounded
    # summary of the value instead of its whole repr (it used to be 80 MB)
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, "
               f"*a{i-1}, *a{i-1}]" for i in range(1, 9)]
    text = "anchors:\n" + "".join(f"  {line}\n" for line in levels)
    text += "train:\n  max_steps: *a8\n"
    with pytest.raises(StageError) as info:
        build_config(TrainConfig, "train", load_preset(write_preset(tmp_path, text))["train"])
    assert info.value.code == "CONFIG_TYPE" and "train.max_steps" in info.value.message
    assert len(info.value.message) < 400


# ---- nested sections, Literal choices, renamed keys ------------------------------------------

@dataclass
class Inner:
    rate: float = 0.5
    kind: Literal["x", "y"] = "x"


@dataclass
class Outer:
    name: str = "n"
    inner: Inner = field(default_factory=Inner)


RENAMED = {"inner_rate": "inner.rate"}


def test_a_nested_section_is_built_from_its_mapping() -> None:
    built = build_config(Outer, "s", {"inner": {"rate": 1, "kind": "y"}})
    assert built.inner == Inner(rate=1, kind="y") and built.name == "n"
    assert build_config(Outer, "s", {}).inner == Inner()


@pytest.mark.parametrize(("values", "code", "named"), [
    ({"inner": {"rate": "fast"}}, "CONFIG_TYPE", "config s.inner.rate='fast': expected float"),
    ({"inner": {"kind": "z"}}, "CONFIG_INVALID", "config s.inner.kind='z': must be one of "
                                                 "['x', 'y']"),
    ({"inner": {"speed": 1}}, "CONFIG_UNKNOWN_KEY", "config section 's.inner': unknown key(s) "
                                                    "['speed']"),
    ({"inner": 3}, "CONFIG_TYPE", "config s.inner=3: expected a section"),
    ({"inner": {"rate": float("inf")}}, "CONFIG_INVALID", "config s.inner.rate=inf"),
])
def test_errors_in_a_nested_section_name_the_full_dotted_key(
        values: dict, code: str, named: str) -> None:
    with pytest.raises(StageError) as info:
        build_config(Outer, "s", values)
    assert info.value.code == code and named in info.value.message, info.value.message


def test_a_renamed_key_still_loads_with_a_deprecation_line(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="common.config"):
        built = build_config(Outer, "s", {"inner_rate": 0.9, "inner": {"kind": "y"}},
                             renamed=RENAMED)
    assert built.inner == Inner(rate=0.9, kind="y")
    (line,) = [r.getMessage() for r in caplog.records]
    assert "s.inner_rate is deprecated" in line and "use s.inner.rate" in line


def test_a_renamed_key_and_its_new_form_together_are_an_error() -> None:
    with pytest.raises(StageError) as info:
        build_config(Outer, "s", {"inner_rate": 0.9, "inner": {"rate": 0.1}}, renamed=RENAMED)
    assert info.value.code == "CONFIG_INVALID"
    assert "s.inner_rate and s.inner.rate are both given" in info.value.message
    with pytest.raises(StageError) as info:
        build_config(Outer, "s", {"inner_rate": 0.9, "inner": 3}, renamed=RENAMED)
    assert info.value.code == "CONFIG_TYPE" and "s.inner=3" in info.value.message
    # without the rename table the old key is just unknown
    with pytest.raises(StageError) as info:
        build_config(Outer, "s", {"inner_rate": 0.9})
    assert info.value.code == "CONFIG_UNKNOWN_KEY"


def test_overrides_reach_into_a_nested_section(tmp_path: Path) -> None:
    preset = write_preset(tmp_path, "eval:\n  judge:\n    task: ifeval\n")
    raw = load_preset(preset, ["eval.judge.min_kappa=0.5", "eval.judge.max_items=7"])
    assert raw["eval"]["judge"] == {"task": "ifeval", "min_kappa": 0.5, "max_items": 7}
    for bad in ("eval.judge..x=1", "eval.judge.=1"):
        with pytest.raises(StageError) as info:
            load_preset(preset, [bad])
        assert info.value.code == "CONFIG_OVERRIDE_INVALID", bad
    with pytest.raises(StageError) as info:  # a scalar is not a section to reach into
        load_preset(write_preset(tmp_path, "eval:\n  judge: 3\n"), ["eval.judge.task=x"])
    assert info.value.code == "CONFIG_OVERRIDE_INVALID"
