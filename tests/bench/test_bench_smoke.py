"""Every script in bench/ runs on its tiniest settings and prints its one JSON object, so a
benchmark cannot rot unnoticed (bench/router_overhead.py once stopped running when the router
grew required flags, and nothing failed). These assert no numbers: timing is the benchmark's
to measure. No real 135 M model and no vLLM: the engine benchmarks run the local engine on
the tiny random Llama. bench/sft_peer.py has its own smoke test (test_sft_peer.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from common.settings import PROJECT_ROOT
from testing.tiny_model import build_tiny_model
from tests.conftest import subprocess_env

BENCH_DIR = PROJECT_ROOT / "bench"
# bench module -> the test that smoke-runs it (checked by test_every_bench_script_...)
SMOKE_TESTS = {
    "router_overhead": "test_router_overhead_smoke",
    "local_engine_throughput": "test_local_engine_throughput_smoke",
    "vllm_eager": "test_vllm_eager_smoke_on_the_local_engine",
    "judge_throughput": "test_judge_throughput_smoke",
    "eval_suite": "test_eval_suite_smoke",
    "train_step": "test_train_step_smoke",
    "data_scaling": "test_data_scaling_smoke",
    "pipeline_setup": "test_pipeline_setup_dry_run_smoke",
    "sft_peer": "test_sft_peer_runs_both_trainers_and_prints_json",
    # the parts of sft_peer, run by its smoke test
    "sft_peer_trainers": "test_sft_peer_runs_both_trainers_and_prints_json",
    "sft_peer_compare": "test_sft_peer_runs_both_trainers_and_prints_json",
}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("bench-model") / "model")


def printed_json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The one JSON object a benchmark prints on stdout (progress goes to stderr)."""
    report = json.loads(capsys.readouterr().out)
    assert isinstance(report, dict)
    return report


@pytest.mark.unit
def test_every_bench_script_is_documented_and_has_a_smoke_test() -> None:
    scripts = {p.stem for p in BENCH_DIR.glob("*.py") if p.stem != "__init__"}
    page = (PROJECT_ROOT / "docs" / "benchmarks.md").read_text()
    assert sorted(s for s in scripts if f"bench/{s}.py" not in page) == [], \
        "list every bench script in docs/benchmarks.md"
    assert sorted(scripts - set(SMOKE_TESTS)) == [], "give every bench script a smoke test"
    tests_text = "".join(p.read_text() for p in (PROJECT_ROOT / "tests" / "bench").glob("*.py"))
    for script, test in SMOKE_TESTS.items():
        assert re.search(rf"^def {test}\(", tests_text, re.MULTILINE), (script, test)


@pytest.mark.integration
def test_router_overhead_smoke(tiny_model_dir: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from bench import router_overhead

    assert router_overhead.main(["--requests", "3", "--warmup", "1",
                                 "--model-dir", str(tiny_model_dir)]) == 0
    report = printed_json(capsys)
    assert report["benchmark"] == "router_overhead"
    assert set(report) >= {"requests", "results", "goal_added_p99_ms", "goal_met", "machine"}
    assert set(report["results"]) == {"GET /v1/models", "POST /v1/completions max_tokens=1"}
    for result in report["results"].values():
        assert {"added_p50_ms", "added_p99_ms", "added_mean_ms"} <= set(result)


@pytest.mark.integration
def test_local_engine_throughput_smoke(tiny_model_dir: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from bench import local_engine_throughput

    assert local_engine_throughput.main(["--requests", "2", "--max-tokens", "2",
                                         "--model-dir", str(tiny_model_dir)]) == 0
    report = printed_json(capsys)
    assert report["benchmark"] == "local_engine_throughput"
    assert set(report) >= {"model", "max_tokens", "levels", "machine"}
    assert [level["concurrency"] for level in report["levels"]] == [1, 8]


@pytest.mark.integration
def test_vllm_eager_smoke_on_the_local_engine(tiny_model_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from bench import vllm_eager

    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path))  # the bench sets it: restored after
    assert vllm_eager.main(["--engine", "local", "--requests", "2", "--max-tokens", "2",
                            "--model-dir", str(tiny_model_dir)]) == 0
    report = printed_json(capsys)
    assert report["benchmark"] == "vllm_eager"
    assert report["engine"] == "local"
    assert set(report) >= {"model", "max_tokens", "runs", "eager_vs_compiled_warm", "machine"}
    assert set(report["runs"]) == {"compiled_cold_cache", "compiled_warm_cache", "eager"}


@pytest.mark.integration
def test_judge_throughput_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import judge_throughput
    from testing.scripted_server import ScriptedServer, chat_reply

    with ScriptedServer(lambda path, request, call: chat_reply("TIE")) as server:
        assert judge_throughput.main(["--base-url", server.base_url, "--model", "scripted",
                                      "--calls", "3", "--latency-ms", "1"]) == 0
    report = printed_json(capsys)
    assert report["benchmark"] == "judge_throughput"
    assert set(report) >= {"concurrency_1", "concurrency_8", "speedup", "goal_speedup",
                           "goal_met", "latency_bound_endpoint", "calibration", "machine"}


@pytest.mark.integration
def test_eval_suite_smoke(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import eval_suite

    assert eval_suite.main(["--model-dir", str(tiny_model_dir), "--limit", "2"]) == 0
    report = printed_json(capsys)
    assert report["benchmark"] == "eval_suite"
    assert set(report) >= {"model_digest", "documents_per_task", "tasks", "paths",
                           "metrics_hf", "max_abs_per_item_difference_between_paths"}
    assert set(report["paths"]) == {"hf", "local-completions"}


@pytest.mark.integration
def test_train_step_smoke(tiny_dataset_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import train_step

    assert train_step.main(["--steps", "3", "--rounds", "1",
                            "--dataset-dir", str(tiny_dataset_dir)]) == 0
    report = printed_json(capsys)
    assert report["benchmark"] == "train_step"
    assert set(report) >= {"bare_step_seconds_median", "stage_step_seconds_median",
                           "ratio_median", "goal_ratio", "meets_goal"}


@pytest.mark.integration
def test_data_scaling_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import data_scaling

    assert data_scaling.main(["--sizes", "200", "--chunk-rows", "100"]) == 0
    report = printed_json(capsys)
    assert report["benchmark"] == "data_scaling"
    assert set(report) >= {"chunk_rows", "sizes", "baseline", "largest_rows",
                           "largest_peak_rss_bytes", "meets_memory_goal"}
    assert [size["rows"] for size in report["sizes"]] == [200]


@pytest.mark.integration
def test_pipeline_setup_dry_run_smoke(isolated_home: Path, tmp_path: Path) -> None:
    """`make -n pipeline` in a fresh clone: the script's clone, console capture and report,
    in seconds (the real run takes 10+ minutes and builds two venvs)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "bench.pipeline_setup", "--dry-run",
                          "--reruns", "1", "--out", str(tmp_path / "consoles")],
                         cwd=PROJECT_ROOT, env=subprocess_env(isolated_home),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert report["benchmark"] == "pipeline_setup"
    assert report["dry_run"] is True
    assert set(report) >= {"commit", "make", "fresh_clone_to_served", "cached_rerun",
                           "load_average_before", "load_average_after"}
    assert report["fresh_clone_to_served"]["exit_code"] == 0
