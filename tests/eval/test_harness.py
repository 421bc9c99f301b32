"""The harness on the tiny model: both model paths, the scoring check, and the plain lm_eval CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eval.errors import EvalError
from eval.harness import HarnessOptions, ModelSource, run_harness
from eval.stage import bos_token, check_scoring
from eval.suite.specs import BUILT_TASKS, prepare_suite
from serving.engine import start_engine
from testing.scripted_server import Reply, ScriptedServer
from tests.conftest import subprocess_env
from tests.eval.conftest import TinyModel

pytestmark = pytest.mark.integration

LIMIT = 20


def test_in_process_and_endpoint_paths_agree(tiny_model: TinyModel, tmp_path: Path) -> None:
    suite = prepare_suite(tmp_path / "suite", list(BUILT_TASKS),
                          bos_token=bos_token(tiny_model.model_dir), max_gen_tokens=8)
    options = HarnessOptions(limit_per_task=LIMIT, cache_dir=tmp_path / "cache")
    in_process = run_harness(ModelSource(tiny_model.model_dir, tiny_model.digest), suite,
                             options)
    with start_engine("local", tiny_model.model_dir, "tiny", log_dir=tmp_path / "logs",
                      ready_timeout_seconds=120) as engine:
        endpoint = run_harness(ModelSource(tiny_model.model_dir, tiny_model.digest,
                                           "local-completions", base_url=engine.base_url,
                                           served_model_name="tiny"), suite, options)
    for task in BUILT_TASKS:
        ours, theirs = in_process.by_doc_hash(task), endpoint.by_doc_hash(task)
        assert set(ours) == set(theirs) and len(ours) == min(LIMIT, 50)
        for doc, sample in ours.items():
            other = theirs[doc]
            for metric, value in sample.metrics.items():
                # float32 on both sides, different batching: log-likelihoods agree to ~1e-5.
                assert other.metrics[metric] == pytest.approx(value, rel=1e-4, abs=1e-4), (
                    task, doc, metric)
            assert other.output == sample.output  # greedy decoding, same tokens
    assert in_process.metrics["shipyard_scoring_check"]["acc"] == 1.0
    assert in_process.versions == {t: "1.0" for t in BUILT_TASKS}
    # One response cache per (model digest, model path): lm-eval's cache ignores the model.
    assert {p.parent.name for p in (tmp_path / "cache" / tiny_model.digest).glob("*/*.db")} == {
        "hf", "local-completions"}


def _flat_logprobs_server(path: str, request: dict[str, Any], call: int) -> Reply:
    """A completions server that ignores `echo` scoring: every token gets logprob 0."""
    prompts = request["prompt"] if isinstance(request["prompt"][0], list) else [
        request["prompt"]]
    choices = []
    for index, ids in enumerate(prompts):
        n = len(ids) + 1
        choices.append({"index": index, "text": "x", "finish_reason": "length", "logprobs": {
            "tokens": ["x"] * n, "token_logprobs": [None] + [0.0] * (n - 1),
            "top_logprobs": [None] + [{"x": 0.0}] * (n - 1), "text_offset": [0] * n}})
    return Reply(body={"id": "cmpl", "object": "text_completion", "choices": choices})


def test_scoring_check_fails_the_stage_when_logprob_scoring_is_broken(tiny_model: TinyModel,
                                                              tmp_path: Path) -> None:
    suite = prepare_suite(tmp_path, ["shipyard_scoring_check"], bos_token="<s>", max_gen_tokens=8)
    with ScriptedServer(_flat_logprobs_server) as server:
        broken = run_harness(ModelSource(tiny_model.model_dir, "broken", "local-completions",
                                         base_url=server.base_url, served_model_name="x"),
                             suite, HarnessOptions(limit_per_task=None))
    accuracy = broken.metrics["shipyard_scoring_check"]["acc"]
    assert 0.1 <= accuracy <= 0.45  # chance is 0.25: all-equal scores pick choice 0
    with pytest.raises(EvalError) as caught:
        check_scoring(broken, 0.95, "candidate")
    assert caught.value.code == "EVAL_SCORING_CHECK_FAILED"


def test_the_same_yamls_run_with_the_plain_lm_eval_cli(tiny_model: TinyModel, tmp_path: Path,
                                                       isolated_home: Path) -> None:
    env = subprocess_env(isolated_home)
    render = subprocess.run([sys.executable, "-m", "eval.suite.specs", "--out",
                             str(tmp_path / "tasks"), "--model-dir", str(tiny_model.model_dir),
                             "--tasks", "shipyard_scoring_check,shipyard_mc"],
                            env=env, capture_output=True, text=True, timeout=120, check=True)
    include = Path(render.stdout.strip().splitlines()[-1])
    cli = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
         f"pretrained={tiny_model.model_dir},add_bos_token=False,dtype=float32",
         "--include_path", str(include), "--tasks", "shipyard_scoring_check,shipyard_mc",
         "--limit", "10", "--device", "cpu", "--output_path", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    cli_results = json.loads(results_file.read_text())["results"]

    suite = prepare_suite(tmp_path / "ours", ["shipyard_scoring_check", "shipyard_mc"],
                          bos_token=bos_token(tiny_model.model_dir), max_gen_tokens=8)
    ours = run_harness(ModelSource(tiny_model.model_dir, tiny_model.digest), suite,
                       HarnessOptions(limit_per_task=10))
    for task in ("shipyard_scoring_check", "shipyard_mc"):
        assert cli_results[task]["acc,none"] == pytest.approx(ours.metrics[task]["acc"])
