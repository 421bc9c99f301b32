"""Served = evaluated (deploy/parity.py): the comparison rules on hand-made outputs, then the
whole check against the real local engine serving the tiny SmolLM2-shaped chat model (the
right model, another model's weights, another chat template).

The real-vLLM counterpart is tests/deploy/test_parity_vllm.py; the stage's refusal is
tests/deploy/test_parity_stage.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import deploy.parity as parity
import deploy.parity_prompts as parity_prompts
from common.errors import StageError
from deploy.config import DeployConfig
from deploy.parity import (
    ParityResult,
    PromptComparison,
    Reference,
    ReferenceStep,
    Served,
    check_engine,
    compare_generation,
    compare_prompt_ids,
    compare_text,
    load_prompts,
    mismatch_error,
    served_greedy,
)
from serving.engine import EngineProcess
from serving.process import free_port
from testing.tiny_chat_model import build_tiny_chat_model, save_base_tokenizer
from tests.deploy.conftest import shared_engine

EOS = 2
NAME = "tiny-chat"


# -- the comparison rules (pure) -----------------------------------------------------------------
def _reference(*steps: tuple[int, dict[int, float]]) -> Reference:
    """Steps as (chosen id, {id: logprob}) with the chosen id the top entry."""
    return Reference("p", [1, 2, 3], [ReferenceStep(t, top[t], top) for t, top in steps], "")


def _served(ids: list[int], logprobs: list[float], finish: str = "length") -> Served:
    return Served(ids, logprobs, [{} for _ in ids], "", finish)


def _compare(reference: Reference, served: Served) -> PromptComparison:
    return compare_generation(reference, served, tolerance=1e-3, max_logprob_diff=0.02,
                              eos_token_ids=frozenset({EOS}))


REF = _reference((10, {10: -1.0, 11: -2.0}), (20, {20: -0.5, 21: -0.5004, 22: -3.0}),
                 (30, {30: -0.1, 31: -4.0}), (40, {40: -0.2, 41: -0.9}))


@pytest.mark.unit
def test_exact_match_compares_every_token_and_keeps_the_largest_logprob_diff() -> None:
    result = _compare(REF, _served([10, 20, 30, 40], [-1.0, -0.5001, -0.1, -0.205]))
    assert result.matched and result.near_tie is None
    assert result.num_compared == 4
    assert result.max_logprob_diff == pytest.approx(0.005)


@pytest.mark.unit
def test_near_tie_at_the_first_divergence_is_accepted_and_ends_the_comparison() -> None:
    # position 1: the reference prefers 20 over 21 by 4e-4 nats, under the 1e-3 tolerance;
    # what follows differs (both continue from different tokens) and is not compared
    result = _compare(REF, _served([10, 21, 99, 98], [-1.0, -0.5004, -0.1, -0.1]))
    assert result.matched
    assert result.near_tie is not None and result.near_tie.position == 1
    assert result.near_tie.reference_gap == pytest.approx(4e-4)
    assert result.num_compared == 1


@pytest.mark.unit
def test_divergence_beyond_the_tolerance_is_a_mismatch() -> None:
    result = _compare(REF, _served([10, 20, 31, 40], [-1.0, -0.5, -4.0, -0.2]))
    assert not result.matched and result.mismatch is not None
    assert (result.mismatch.kind, result.mismatch.position) == ("tokens", 2)
    assert (result.mismatch.expected_id, result.mismatch.served_id) == (30, 31)
    assert result.mismatch.reference_gap == pytest.approx(3.9)


@pytest.mark.unit
def test_served_token_outside_the_reference_top_k_is_a_mismatch_without_a_gap() -> None:
    result = _compare(REF, _served([777, 20, 30, 40], [-0.1] * 4))
    assert result.mismatch is not None and result.mismatch.reference_gap is None


@pytest.mark.unit
@pytest.mark.parametrize("served_ids", [[10, 20, EOS], [10, 20]],
                         ids=["eos-reported", "eos-left-out"])
def test_shorter_output_ending_with_eos_matches_a_reference_that_ended_there(
        served_ids: list[int]) -> None:
    reference = _reference((10, {10: -1.0}), (20, {20: -0.5}), (EOS, {EOS: -0.3}))
    result = _compare(reference, _served(served_ids, [-1.0, -0.5, -0.3][:len(served_ids)],
                                         finish="stop"))
    assert result.matched and result.num_compared == 3


@pytest.mark.unit
def test_engine_that_stops_where_the_reference_goes_on_is_a_mismatch() -> None:
    result = _compare(REF, _served([10, 20], [-1.0, -0.5], finish="stop"))
    assert result.mismatch is not None
    assert (result.mismatch.position, result.mismatch.served_id) == (2, None)


@pytest.mark.unit
def test_same_tokens_with_other_probabilities_is_a_mismatch() -> None:
    # other weights (or a 16-bit dtype) often keep the greedy token and move its probability
    result = _compare(REF, _served([10, 20, 30, 40], [-1.0, -0.5, -0.6, -0.2]))
    assert result.mismatch is not None
    assert (result.mismatch.kind, result.mismatch.position) == ("logprobs", 2)


@pytest.mark.unit
def test_prompt_rendered_differently_and_text_decoded_differently_are_mismatches() -> None:
    assert compare_prompt_ids("p", [1, 2, 3], [1, 2, 3]) is None
    prompt = compare_prompt_ids("p", [1, 2, 3, 4], [1, 2, 9])
    assert prompt is not None and prompt.mismatch is not None
    assert (prompt.mismatch.kind, prompt.mismatch.position) == ("prompt", 2)
    matched = _compare(REF, _served([10, 20, 30, 40], [-1.0, -0.5, -0.1, -0.2]))
    text = compare_text(matched, replace(REF, text="four"),
                        replace(_served([10, 20, 30, 40], [0.0] * 4), text="vier"))
    assert text.mismatch is not None and text.mismatch.kind == "text"
    # output that ends inside a multi-byte character: vLLM drops the partial bytes
    cut = compare_text(matched, replace(REF, text="l3\ufffd\ufffd"),
                       replace(_served([10, 20, 30, 40], [0.0] * 4), text="l3"))
    assert cut.matched


@pytest.mark.unit
def test_mismatch_error_names_prompt_position_tokens_and_causes() -> None:
    result = ParityResult("http://127.0.0.1:1", "1", 8, 16, 1e-3, 0.02, mismatch={
        "prompt_id": "capital", "prompt": "?", "kind": "tokens", "position": 3,
        "expected_id": 30, "expected_text": " Paris", "served_id": 31, "served_text": " Rome",
        "reference_gap": 3.9, "detail": "", "likely_causes": parity.LIKELY_CAUSES["tokens"]})
    error = mismatch_error(result, "canary", "models:/m/2", "ab" * 32, "Rolled back.")
    assert error.code == "DEPLOY_SERVED_MODEL_MISMATCH"
    for fact in ("canary", "'capital'", "generated token 3", "' Paris'", "' Rome'", "dtype",
                 "models:/m/2", "3.9"):
        assert fact in error.message
    assert error.details["parity"]["matched"] is False


@pytest.mark.unit
def test_prompt_set_is_pinned_to_its_version(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = load_prompts()
    assert len(prompts) == 8 and len({p.id for p in prompts}) == 8
    edited = tmp_path / "parity_prompts.jsonl"
    edited.write_text(parity.PROMPTS_FILE.read_text().replace("12 + 7", "12 + 8"))
    # the owner of the prompt set reads its PROMPTS_FILE (deploy.parity re-exports it)
    monkeypatch.setattr(parity_prompts, "PROMPTS_FILE", edited)
    with pytest.raises(StageError) as info:
        load_prompts(edited)
    assert info.value.code == "CONFIG_INVALID" and "PROMPTS_VERSION" in info.value.message


@pytest.mark.unit
@pytest.mark.parametrize("field,value", [("parity_max_tokens", 0),
                                         ("parity_logprob_tolerance", -1e-3),
                                         ("parity_max_logprob_diff", 2.0)])
def test_config_refuses_parity_settings_that_compare_nothing(field: str, value: float) -> None:
    with pytest.raises(StageError) as info:
        DeployConfig(**{field: value})  # type: ignore[arg-type]
    assert info.value.code == "CONFIG_INVALID" and field in info.value.message


# -- against a real engine -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def chat_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny SmolLM2-shaped chat model (seed 0), other weights (seed 1), and seed 0's
    weights with another chat template (a system prompt of its own)."""
    root = tmp_path_factory.mktemp("parity-models")
    tokenizer = save_base_tokenizer(root / "tokenizer")
    models = {name: build_tiny_chat_model(root / name, tokenizer_dir=tokenizer, seed=seed)
              for name, seed in (("evaluated", 0), ("other_weights", 1))}
    other_template = shutil.copytree(models["evaluated"], root / "other_template")
    template = other_template / "chat_template.jinja"
    assert "You are a helpful AI assistant" in template.read_text()
    template.write_text(template.read_text().replace("You are a helpful AI assistant",
                                                     "You are a terse assistant"))
    models["other_template"] = other_template
    return models


@pytest.fixture(scope="module")
def local_chat_engine(chat_models: dict[str, Path],
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    yield from shared_engine("local", chat_models["evaluated"], NAME,
                             tmp_path_factory.mktemp("logs"))


def check(engine: EngineProcess, reference_dir: Path) -> ParityResult:
    return check_engine(engine.base_url, NAME, reference_dir, max_tokens=16, tolerance=1e-3,
                        max_logprob_diff=0.02)


@pytest.mark.integration
def test_local_engine_serving_the_evaluated_model_passes(
        local_chat_engine: EngineProcess, chat_models: dict[str, Path]) -> None:
    result = check(local_chat_engine, chat_models["evaluated"])
    assert result.matched, result.mismatch
    assert result.num_tokens_compared == 8 * 16  # 8 prompts, none cut short by a near-tie
    assert result.max_logprob_diff < 1e-4  # same code, same fp32 weights


@pytest.mark.integration
def test_local_engine_serving_other_weights_is_refused(
        local_chat_engine: EngineProcess, chat_models: dict[str, Path]) -> None:
    result = check(local_chat_engine, chat_models["other_weights"])
    assert result.mismatch is not None
    assert result.mismatch["kind"] in ("tokens", "logprobs")
    assert result.mismatch["prompt_id"] == load_prompts()[0].id  # stops at the first


@pytest.mark.integration
def test_engine_whose_chat_template_differs_is_refused_at_the_prompt(
        local_chat_engine: EngineProcess, chat_models: dict[str, Path]) -> None:
    # the evaluated model's template has another default system prompt than the served one
    result = check(local_chat_engine, chat_models["other_template"])
    assert result.mismatch is not None and result.mismatch["kind"] == "prompt"
    assert "chat template" in result.mismatch["likely_causes"]


@pytest.mark.integration
def test_engine_that_cannot_answer_the_check_fails_it_with_its_own_code(
        local_chat_engine: EngineProcess) -> None:
    # a request the engine refuses (unknown served model name: 404), and nothing listening
    for base_url, name in ((local_chat_engine.base_url, "not-served"),
                           (f"http://127.0.0.1:{free_port()}", NAME)):
        with pytest.raises(StageError) as info:
            served_greedy(base_url, name, [1, 2, 3], max_tokens=2)
        assert info.value.code == "DEPLOY_PARITY_REQUEST_FAILED"
        assert base_url in info.value.message
