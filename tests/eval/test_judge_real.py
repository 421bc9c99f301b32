"""The real packaged SmolLM2-135M-Instruct as a judge, provisioned from its pinned wheel and
served by real vLLM (CPU build): it answers, and it does not earn a vote on human labels.

The other path (a judge that earns the vote) is a scripted judge that agrees with the LLMBar
annotators: tests/eval/test_judge_calibration.py."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from common.settings import load_settings
from eval.config import EvalConfig, GateConfig, JudgeConfig
from eval.engines import judge_endpoints
from eval.harness import SampleResult, doc_hash
from eval.judge.run import run_judge
from tests.deploy.conftest import VLLM_VENV_DIR, vllm_python  # noqa: F401 (fixture)

PAIRS = 12


def _ifeval_like(verbose: bool) -> list[SampleResult]:
    """The same one-sentence answers, the candidate's padded: what a verbose fine-tune does."""
    out = []
    for i in range(PAIRS):
        doc = {"key": i, "prompt": f"In one sentence, what is the capital of country #{i}?"}
        answer = f"The capital of country #{i} is City {i}."
        if verbose:
            answer += " It is a large city with many people, roads and buildings." * (1 + i % 3)
        out.append(SampleResult("ifeval", i, doc_hash(doc), {}, answer, doc))
    return out


@pytest.mark.real_model
@pytest.mark.integration
@pytest.mark.timeout(1200)
def test_the_packaged_small_judge_serves_on_vllm_and_does_not_earn_a_vote(
        vllm_python: Path,  # noqa: F811 (the fixture)
        tmp_path: Path) -> None:
    config = EvalConfig(
        judge=JudgeConfig(source="package:smollm2-135m-instruct", task="ifeval",
                          calibration_subsets=["natural", "adversarial_neighbor"],
                          calibration_limit_per_subset=10, max_items=PAIRS),
        serving_engine="vllm", vllm_venv_dir=str(VLLM_VENV_DIR),
        tasks=["shipyard_scoring_check", "ifeval"],
        gate=GateConfig(non_inferiority_margins={}, bootstrap_resamples=500))
    with ExitStack() as engines:
        judges = judge_endpoints(config, engines, None,
                                 load_settings().layout.base_models_dir)
        assert len(judges) == 1 and judges[0].model_digest is not None
        report = run_judge(config, judges[0], _ifeval_like(True), _ifeval_like(False),
                           tmp_path / "cache")
    calibration = report.calibration
    assert calibration is not None and calibration.num_pairs == 20
    print(f"SmolLM2-135M judge on LLMBar (20 pairs): accuracy {calibration.accuracy:.3f}, "
          f"kappa {calibration.kappa:.3f}, order agreement {calibration.order_agreement:.3f}, "
          f"invalid {calibration.invalid_output_rate:.3f}, {calibration.seconds:.1f} s; "
          f"raw win rate {report.pairwise and report.pairwise.win_rate}, "
          f"LC {report.length_control and report.length_control.lc_win_rate}; "
          f"reasons {report.non_gating_reasons}")
    # It answers, mostly in the verdict format (the engine and the prompt work) ...
    assert calibration.invalid_output_rate < 0.5
    assert report.pairwise is not None
    assert report.pairwise.num_pairs == PAIRS
    # ... and fails its calibration honestly: advisory, with the numbers as reasons.
    assert not report.gating
    assert any("kappa" in r or "order agreement" in r for r in report.non_gating_reasons)
