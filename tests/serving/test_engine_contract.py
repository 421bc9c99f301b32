"""One contract, both engines: what clients (lm-eval's local-completions, OpenAI SDKs, the
canary controller) rely on must hold for real vLLM and for the local engine alike, so the
local engine cannot drift from vLLM's API and metric names.

Each engine starts once per session (vLLM takes about a minute on 2 cores) and is checked to
be gone, process and port, at teardown.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from lm_eval.models.openai_completions import LocalCompletionsAPI

from deploy.metric_sources import parse_prometheus_text
from serving.engine import EngineProcess, start_engine
from serving.local.engine_metrics import ENGINE_METRIC_NAMES
from testing.tiny_model import CONTEXT_TOKENS
from tests.deploy.conftest import VLLM_VENV_DIR, assert_servers_gone, shared_engine
from tests.deploy.http import request

NAME = "tiny-contract"


def _start_shared(kind: str, model_dir: Path, log_dir: Path) -> Iterator[EngineProcess]:
    yield from shared_engine(kind, model_dir, NAME, log_dir, vllm_venv_dir=VLLM_VENV_DIR)


@pytest.fixture(scope="session")
def local_engine(model_dirs: dict[str, Path],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    yield from _start_shared("local", model_dirs["stable"], tmp_path_factory.mktemp("logs"))


@pytest.fixture(scope="session")
def vllm_engine(vllm_python: Path, model_dirs: dict[str, Path],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    yield from _start_shared("vllm", model_dirs["stable"], tmp_path_factory.mktemp("logs"))


@pytest.fixture(params=["local", pytest.param("vllm", marks=pytest.mark.e2e)])
def engine(request: pytest.FixtureRequest) -> EngineProcess:
    return request.getfixturevalue(f"{request.param}_engine")


def _ids(engine: EngineProcess, text: str) -> list[int]:
    reply = request(f"{engine.base_url}/tokenize", {"model": NAME, "prompt": text})
    assert reply.status == 200, reply.body
    return list(reply.json()["tokens"])


pytestmark = pytest.mark.integration


def test_health_and_models(engine: EngineProcess) -> None:
    assert request(f"{engine.base_url}/health").status == 200
    models = request(f"{engine.base_url}/v1/models").json()
    assert [m["id"] for m in models["data"]] == [NAME]
    assert models["data"][0]["max_model_len"] == CONTEXT_TOKENS


def test_prompt_logprobs_are_what_lm_eval_scores(engine: EngineProcess) -> None:
    """lm-eval's local-completions sends token ids with echo + logprobs and parses the
    legacy logprobs format: the exact request and parser are used here."""
    context = _ids(engine, "What is 1 + 2?")
    continuation = _ids(engine, " 3")[1:]  # without BOS
    api = LocalCompletionsAPI.__new__(LocalCompletionsAPI)  # only its payload builder is used
    api.model = NAME
    payload = api._create_payload([context + continuation])
    reply = request(f"{engine.base_url}/v1/completions", payload)
    assert reply.status == 200, reply.body
    out = reply.json()
    logprobs = out["choices"][0]["logprobs"]
    num_tokens = len(context) + len(continuation) + 1  # + the one generated token
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == num_tokens
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert all(lp <= 0 for lp in logprobs["token_logprobs"][1:])
    assert logprobs["text_offset"] == sorted(logprobs["text_offset"])
    # the scored token itself is always among top_logprobs (is_greedy relies on it)
    for token_lp, top in zip(logprobs["token_logprobs"][1:], logprobs["top_logprobs"][1:],
                             strict=True):
        assert any(abs(token_lp - v) < 1e-6 for v in top.values())
    [(score, is_greedy)] = LocalCompletionsAPI.parse_logprobs(out, ctxlens=[len(context)])
    assert score < 0 and isinstance(is_greedy, bool)


def test_echo_with_zero_max_tokens_scores_the_prompt_only(engine: EngineProcess) -> None:
    prompt = "What is the capital of Monaholm?"
    reply = request(f"{engine.base_url}/v1/completions",
                    {"model": NAME, "prompt": prompt, "max_tokens": 0, "echo": True,
                     "logprobs": 0, "temperature": 0})
    assert reply.status == 200, reply.body
    choice = reply.json()["choices"][0]
    assert choice["text"] == prompt
    assert len(choice["logprobs"]["tokens"]) == len(_ids(engine, prompt))


def test_completions_batch_greedy_and_usage(engine: EngineProcess) -> None:
    body = {"model": NAME, "prompt": ["What is 2 + 2?", "Reverse the word 'abc'."],
            "max_tokens": 6, "temperature": 0}
    first = request(f"{engine.base_url}/v1/completions", body).json()
    second = request(f"{engine.base_url}/v1/completions", body).json()
    assert [c["index"] for c in first["choices"]] == [0, 1]
    assert [c["text"] for c in first["choices"]] == [c["text"] for c in second["choices"]]
    assert first["usage"]["prompt_tokens"] > 0
    assert 0 < first["usage"]["completion_tokens"] <= 12


def test_stop_sequence_cuts_the_text(engine: EngineProcess) -> None:
    # seeded sampling is reproducible and, unlike greedy on random weights, rarely empty
    body = {"model": NAME, "prompt": "What is 7 * 3?", "max_tokens": 16, "temperature": 1.0,
            "seed": 7}
    full = request(f"{engine.base_url}/v1/completions", body).json()["choices"][0]["text"]
    stop = next((full[i:i + 2] for i in range(1, len(full) - 1)
                 if full[i:i + 2].isascii() and full[i:i + 2].strip()), None)
    if stop is None:
        pytest.skip(f"greedy output {full!r} has no ASCII pair to stop on")
    cut = request(f"{engine.base_url}/v1/completions", {**body, "stop": [stop]}).json()
    choice = cut["choices"][0]
    assert choice["text"] == full[:full.index(stop)]
    assert choice["finish_reason"] == "stop"


def test_chat_streaming_matches_non_streaming(engine: EngineProcess) -> None:
    body = {"model": NAME, "messages": [{"role": "user", "content": "What is 1 + 39?"}],
            "max_tokens": 8, "temperature": 0}
    whole = request(f"{engine.base_url}/v1/chat/completions", body).json()
    assert whole["object"] == "chat.completion"
    assert whole["choices"][0]["message"]["role"] == "assistant"
    stream = request(f"{engine.base_url}/v1/chat/completions", {**body, "stream": True})
    assert stream.status == 200
    assert stream.headers.get("content-type", "").startswith("text/event-stream")
    events = stream.sse_events()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_max_tokens_is_capped_at_the_context(engine: EngineProcess) -> None:
    question = _ids(engine, "What is 1 + 2?")
    prompt_ids = (question + question[1:] * 40)[:CONTEXT_TOKENS - 20]
    reply = request(f"{engine.base_url}/v1/completions",
                    {"model": NAME, "prompt": [prompt_ids], "max_tokens": CONTEXT_TOKENS,
                     "temperature": 0})
    assert reply.status == 200, reply.body
    usage = reply.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= CONTEXT_TOKENS


@pytest.mark.parametrize(("body", "status"), [
    (b"{not json", 400),
    ({"model": NAME, "prompt": "x", "max_tokens": "many"}, 400),
    ({"model": NAME, "prompt": "x", "max_tokens": 10 * CONTEXT_TOKENS}, 400),
    ({"model": NAME, "prompt": "hello " * 400, "max_tokens": 1}, 400),
    ({"model": NAME, "prompt": "x", "logprobs": 1000}, 400),
    ({"model": "no-such-model", "prompt": "x"}, 404),
    ({"model": NAME, "messages": []}, 400),
])
def test_bad_requests_get_a_clear_4xx(engine: EngineProcess, body: object, status: int) -> None:
    path = "/v1/chat/completions" if isinstance(body, dict) and "messages" in body \
        else "/v1/completions"
    raw = body if isinstance(body, bytes) else None
    reply = request(f"{engine.base_url}{path}", None if raw else body, raw=raw)
    assert reply.status == status, reply.body
    assert reply.json()["error"]["message"]


def test_metrics_have_vllm_names_and_count_requests(engine: EngineProcess) -> None:
    def scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
        return parse_prometheus_text(request(f"{engine.base_url}/metrics").body.decode())

    before = scrape()
    reply = request(f"{engine.base_url}/v1/completions",
                    {"model": NAME, "prompt": "What is 3 + 4?", "max_tokens": 4,
                     "temperature": 0})
    assert reply.status == 200
    time.sleep(1.0)  # vLLM publishes engine stats asynchronously
    after = scrape()
    for name in ENGINE_METRIC_NAMES:
        family_samples = [k for k in after if k == name or k.startswith(f"{name}_")]
        assert family_samples, f"{name} missing from /metrics"

    def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
        return sum(v for labels, v in samples.get(name, []) if labels.get("model_name") == NAME)

    for name in ("vllm:request_success_total", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total", "vllm:e2e_request_latency_seconds_count"):
        assert total(after, name) > total(before, name), name
    assert any(labels.get("status") == "2xx" for labels, _ in after["http_requests_total"])


def test_local_engine_finishes_in_flight_requests_on_sigterm(
        model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Graceful shutdown: a request being generated when SIGTERM arrives still completes."""
    with start_engine("local", model_dirs["stable"], NAME, log_dir=tmp_path) as engine:
        replies = []
        body = {"model": NAME, "messages": [{"role": "user", "content": "Count."}],
                "max_tokens": 200, "temperature": 0, "stream": True}
        worker = threading.Thread(target=lambda: replies.append(
            request(f"{engine.base_url}/v1/chat/completions", body)))
        worker.start()
        time.sleep(0.3)
        psutil.Process(engine.pid).send_signal(signal.SIGTERM)
        worker.join(60)
        assert replies and replies[0].status == 200
        assert replies[0].sse_events()[-1] == "[DONE]"
    assert_servers_gone({engine.pid}, {engine.port})
