"""Smoke test of bench/sft_peer.py: both trainers run 2 steps on the tiny chat model, full and
LoRA, and the report is one JSON object with the keys docs/benchmarks.md quotes. It asserts
no numbers: timing and memory are the benchmark's to measure, not a test's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import sft_peer
from tests.training.chat_fixtures import (  # noqa: F401 (fixtures)
    small_chat_dataset_dir,
    tiny_chat_model_dir,
)

RESULT_KEYS = {
    "losses", "max_abs_loss_difference", "max_relative_loss_difference",
    "loss_relative_tolerance", "losses_within_tolerance", "initial_weights_equal",
    "decay_groups_equal", "tokens_per_step", "throughput", "ratio_basis",
    "tokens_per_second_ratio_shipyard_over_trl", "tokens_per_cpu_second_ratio_shipyard_over_trl",
    "goal_ratio", "meets_goal", "peak_rss_bytes", "runs", "settings",
}
THROUGHPUT_KEYS = {"loss_tokens_per_second", "example_tokens_per_second",
                   "loss_tokens_per_cpu_second", "steady_wall_seconds", "steady_cpu_seconds"}


@pytest.mark.integration
def test_sft_peer_runs_both_trainers_and_prints_json(
        tiny_chat_model_dir: Path, small_chat_dataset_dir: Path,  # noqa: F811
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = sft_peer.main(["--steps", "2", "--finetune", "both", "--threads", "1",
                          "--model-dir", str(tiny_chat_model_dir),
                          "--dataset-dir", str(small_chat_dataset_dir),
                          "--work-dir", str(tmp_path / "work")])

    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "sft_peer"
    assert set(report["results"]) == {"full", "lora"}
    for method, result in report["results"].items():
        assert set(result) >= RESULT_KEYS, method
        assert set(result["runs"][0]) == {"shipyard", "trl"}
        for trainer in ("shipyard", "trl"):
            assert len(result["losses"][trainer]) == 2
            assert set(result["throughput"][trainer]) >= THROUGHPUT_KEYS
            assert result["peak_rss_bytes"][trainer] > 0
        assert result["runs"][0]["trl"]["same_batches"] is True
        assert result["runs"][0]["trl"]["sequential_sampler"] is True
