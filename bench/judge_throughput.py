"""Benchmark: judge calls per second at concurrency 1 versus 8.

1. Against the deploy stage's serving engine (`local` or `vllm`) on a model directory: the
   same number of distinct pairwise-judge prompts (no cache), sent by the real
   `JudgeClient` one at a time, then 8 in flight. Goal: speedup >= 5x.
2. Against a latency-bound endpoint (the scripted test server answering after
   --latency-ms, the way a hosted judge's network round trip behaves), to show what the
   client's bounded concurrency delivers when the server is not CPU-bound on this machine.

A CPU-bound engine on N cores cannot serve more than about N calls at once, whatever the
client does; the JSON says how many cores this ran on.

3. With --calibrate: the judge's calibration on the human-labelled LLMBar pairs (both answer
   orders, at the client's concurrency), its seconds and calls, per subset beside the
   published judges: `--calibration-full` subsets entirely, the others' first
   `--calibration-slice` pairs.

Prints one JSON object.

    python -m bench.judge_throughput --model-dir DIR [--engine local|vllm] [--calls 96]
    python -m bench.judge_throughput --base-url URL --model NAME [--calibrate]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from eval.judge.client import CallPolicy, JudgeClient, JudgeEndpoint, JudgeRequest
from eval.judge.prompts import load_prompt
from eval.report import jsonable
from eval.suite.build import DEFAULT_SOURCE, load_items

GOAL_SPEEDUP = 5.0


def requests(count: int, offset: int) -> list[JudgeRequest]:
    prompt = load_prompt("pairwise", "v1")
    items = load_items(DEFAULT_SOURCE)[offset: offset + count]
    return [JudgeRequest(prompt.render(question=i.prompt, answer_a=i.response,
                                       answer_b=i.response[::-1]), f"bench-{offset}-{n}")
            for n, i in enumerate(items)]


def measure(endpoint: JudgeEndpoint, concurrency: int, batch: list[JudgeRequest],
            max_tokens: int) -> dict[str, Any]:
    client = JudgeClient(endpoint, CallPolicy(concurrency=concurrency, max_tokens=max_tokens,
                                              timeout_seconds=300))
    started = time.perf_counter()
    replies = client.complete_all(batch)
    seconds = time.perf_counter() - started
    return {"concurrency": concurrency, "calls": len(batch), "seconds": seconds,
            "calls_per_second": len(batch) / seconds,
            "completion_tokens": client.stats.completion_tokens,
            "failed_calls": sum(r.text is None for r in replies)}


def latency_bound_run(calls: int, latency_ms: float, max_tokens: int) -> dict[str, Any]:
    from testing.scripted_server import ScriptedServer, chat_reply

    def answer(path: str, request: dict[str, Any], call: int) -> Any:
        reply = chat_reply("TIE")
        reply.delay_seconds = latency_ms / 1000
        return reply

    with ScriptedServer(answer) as server:
        endpoint = JudgeEndpoint(server.base_url, "scripted")
        serial = measure(endpoint, 1, requests(calls, 0), max_tokens)
        parallel = measure(endpoint, 8, requests(calls, calls), max_tokens)
    return {"latency_ms": latency_ms,
            "calls_per_second_concurrency_1": serial["calls_per_second"],
            "calls_per_second_concurrency_8": parallel["calls_per_second"],
            "speedup": parallel["calls_per_second"] / serial["calls_per_second"]}


def calibration_run(endpoint: JudgeEndpoint, full: list[str], slice_size: int,
                    max_tokens: int, concurrency: int) -> dict[str, Any]:
    """Calibration on LLMBar: `full` subsets entirely, every other subset's first pairs."""
    from eval.judge.human_calibration import Statistics, calibrate_on_human
    from eval.judge.llmbar import SUBSETS

    client = JudgeClient(endpoint, CallPolicy(concurrency=concurrency, max_tokens=max_tokens,
                                              timeout_seconds=600))
    prompt = load_prompt("pairwise", "v1")
    stats = Statistics(confidence=0.9, resamples=2000, seed=20240601)
    runs = [(full, None), ([s for s in SUBSETS if s not in full], slice_size)]
    results = [calibrate_on_human(client, prompt, subsets, limit, stats, min_kappa=0.6,
                                  min_order_agreement=0.75)
               for subsets, limit in runs if subsets and (limit is None or limit > 0)]
    return {"judge": endpoint.identity, "concurrency": concurrency,
            "seconds": sum(r.seconds for r in results),
            "calls": sum(r.calls for r in results),
            "failed_calls": client.stats.failures,
            "runs": [dataclasses.asdict(r) for r in results]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.judge_throughput")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model-dir", type=Path, help="start --engine on this model")
    where.add_argument("--base-url", help="an OpenAI-compatible judge endpoint already up")
    parser.add_argument("--model", default="judge", help="model name at --base-url")
    parser.add_argument("--engine", default="local", choices=("local", "vllm"))
    parser.add_argument("--calls", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=100.0,
                        help="server latency of the latency-bound endpoint run")
    parser.add_argument("--calibrate", action="store_true",
                        help="also calibrate the judge on human labels (LLMBar)")
    parser.add_argument("--calibration-full", default="natural",
                        help="comma-separated subsets calibrated entirely")
    parser.add_argument("--calibration-slice", type=int, default=10,
                        help="first pairs of each other subset (0: none)")
    args = parser.parse_args(argv)

    from serving.engine import start_engine

    with contextlib.ExitStack() as stack:
        started = time.perf_counter()
        if args.model_dir is not None:
            work = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-judge-"))
            engine = stack.enter_context(start_engine(args.engine, args.model_dir, "judge",
                                                      log_dir=Path(work)))
            endpoint = JudgeEndpoint(engine.base_url, "judge")
        else:
            endpoint = JudgeEndpoint(args.base_url, args.model)
        engine_seconds = time.perf_counter() - started
        measure(endpoint, 8, requests(8, 400), args.max_tokens)  # warm-up, distinct prompts
        # Distinct prompts per run: nothing is served from a prefix or response cache twice.
        serial = measure(endpoint, 1, requests(args.calls, 0), args.max_tokens)
        parallel = measure(endpoint, 8, requests(args.calls, args.calls), args.max_tokens)
        calibration = (calibration_run(endpoint, args.calibration_full.split(","),
                                       args.calibration_slice, args.max_tokens, 8)
                       if args.calibrate else None)
    speedup = parallel["calls_per_second"] / serial["calls_per_second"]
    latency_bound = latency_bound_run(args.calls, args.latency_ms, args.max_tokens)
    print(json.dumps(jsonable({
        "benchmark": "judge_throughput",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "engine": args.engine if args.model_dir is not None else args.base_url,
        "engine_start_seconds": engine_seconds if args.model_dir is not None else None,
        "max_tokens": args.max_tokens,
        "concurrency_1": serial, "concurrency_8": parallel,
        "speedup": speedup, "goal_speedup": GOAL_SPEEDUP, "goal_met": speedup >= GOAL_SPEEDUP,
        "latency_bound_endpoint": latency_bound,
        "calibration": calibration,
    }), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
