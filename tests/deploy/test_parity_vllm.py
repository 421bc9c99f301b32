"""Served = evaluated against real vLLM (the CPU build): one engine serves the tiny SmolLM2-shaped
chat model and is checked against three references, the model it serves (passes: vLLM's fp32
greedy tokens are transformers'), another model's weights and another chat template (both
refused with DEPLOY_SERVED_MODEL_MISMATCH). One engine for the module, eager (no
torch.compile), gone process and port at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.parity import ParityResult, check_engine, mismatch_error
from serving.engine import EngineProcess
from tests.deploy.conftest import VLLM_VENV_DIR, shared_engine
from tests.deploy.test_parity import chat_models  # noqa: F401  (the shared tiny chat models)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
NAME = "tiny-chat"


@pytest.fixture(scope="module")
def vllm_chat_engine(vllm_python: Path, chat_models: dict[str, Path],  # noqa: F811
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    yield from shared_engine("vllm", chat_models["evaluated"], NAME,
                             tmp_path_factory.mktemp("logs"), vllm_venv_dir=VLLM_VENV_DIR,
                             enforce_eager=True)


def check(engine: EngineProcess, reference_dir: Path) -> ParityResult:
    return check_engine(engine.base_url, NAME, reference_dir, max_tokens=16, tolerance=1e-3,
                        max_logprob_diff=0.02)


def test_vllm_serving_the_evaluated_model_passes(
        vllm_chat_engine: EngineProcess, chat_models: dict[str, Path]) -> None:  # noqa: F811
    result = check(vllm_chat_engine, chat_models["evaluated"])
    assert result.matched, result.mismatch
    assert result.num_tokens_compared >= 8  # every prompt compared (fewer only at near-ties)
    assert result.max_logprob_diff < 1e-3


@pytest.mark.parametrize("reference,kind", [("other_weights", ("tokens", "logprobs")),
                                            ("other_template", ("prompt",))])
def test_vllm_serving_another_model_than_the_reference_is_refused(
        vllm_chat_engine: EngineProcess, chat_models: dict[str, Path],  # noqa: F811
        reference: str, kind: tuple[str, ...]) -> None:
    result = check(vllm_chat_engine, chat_models[reference])
    assert result.mismatch is not None and result.mismatch["kind"] in kind
    error = mismatch_error(result, "canary", "models:/tiny-chat/2", "ab" * 32, "Rolled back.")
    assert error.code == "DEPLOY_SERVED_MODEL_MISMATCH"
    assert result.mismatch["prompt_id"] in error.message
