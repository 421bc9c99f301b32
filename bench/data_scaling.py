"""Benchmark: the streaming data stage (validation + token files) at growing corpus sizes.

For each size, a synthetic corpus (`data.generate.write_scaling_corpus`: 90 % train, 5 %
validation, 5 % eval, every row distinct, so it passes the suite) is generated, then one fresh
child process runs `validate_dataset` on it and reports its wall time and its own peak RSS
(`getrusage(RUSAGE_SELF).ru_maxrss`, measured in the child so each size is measured alone).

Baseline, in the same run: the time per row at 100 k rows. Goals: time per row at 1 M within
1.3x of it (cost linear in rows), peak RSS at 1 M under 1.5 GB (flat memory). The child's CPU
time (user + system, all threads) and the load average around each size are reported too: on
a shared machine the wall time also measures the neighbours, the CPU time much less so.

Prints one JSON object.

    python -m bench.data_scaling [--sizes 10000 100000 1000000] [--chunk-rows 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common.fs import directory_bytes
from common.html import format_bytes
from common.settings import PROJECT_ROOT

BASELINE_ROWS = 100_000
GOAL_TIME_PER_ROW_RATIO = 1.3
GOAL_PEAK_RSS_BYTES = 1_500_000_000


def run_child(input_dir: Path, output_dir: Path, chunk_rows: int) -> dict[str, Any]:
    """In the child: run the stage once; returns its numbers."""
    rss_before = _peak_rss_bytes()
    from data.config import DataConfig
    from data.stage import validate_dataset

    config = DataConfig(train_path=str(input_dir / "train.jsonl"),
                        validation_path=str(input_dir / "validation.jsonl"),
                        eval_path=str(input_dir / "eval.jsonl"), chunk_rows=chunk_rows)
    rss_after_imports = _peak_rss_bytes()
    started, cpu_started = time.perf_counter(), time.process_time()
    outcome = validate_dataset(config, output_dir)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    headers = {split: json.loads((output_dir / f"{split}.tokens.json").read_text())
               for split in ("train", "validation")}
    return {
        "stage_seconds": seconds,
        "stage_cpu_seconds": cpu_seconds,
        "peak_rss_bytes": _peak_rss_bytes(),
        "peak_rss_after_imports_bytes": rss_after_imports,
        "peak_rss_interpreter_bytes": rss_before,
        "rows_per_split": outcome.split_rows,
        "tokens_per_split": {split: h["num_tokens"] for split, h in headers.items()},
        "token_file_bytes": sum((output_dir / f"{split}.tokens.bin").stat().st_size
                                for split in headers),
        "passed": outcome.report.passed,
    }


def _peak_rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(rows: int, chunk_rows: int, work: Path) -> dict[str, Any]:
    from data.generate import write_scaling_corpus

    input_dir, output_dir = work / f"input-{rows}", work / f"output-{rows}"
    started = time.perf_counter()
    write_scaling_corpus(input_dir, rows)
    generate_seconds = time.perf_counter() - started
    input_bytes = directory_bytes(input_dir)
    command = [sys.executable, "-m", "bench.data_scaling", "--child", str(input_dir),
               str(output_dir), "--chunk-rows", str(chunk_rows)]
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(PROJECT_ROOT)}
    load_before = os.getloadavg()
    wall_started = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the stage failed at {rows} rows:\n{done.stderr[-3000:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    for path in (input_dir, output_dir):  # free the disk before the next size
        subprocess.run(["rm", "-rf", str(path)], check=True)
    return {
        "rows": rows,
        "input_bytes": input_bytes,
        "generate_seconds": round(generate_seconds, 2),
        "child_wall_seconds": round(time.perf_counter() - wall_started, 2),
        "load_average_1min_before_after": [round(load_before[0], 2),
                                           round(os.getloadavg()[0], 2)],
        **child,
        "rows_per_second": rows / child["stage_seconds"],
        "microseconds_per_row": child["stage_seconds"] / rows * 1e6,
        "cpu_microseconds_per_row": child["stage_cpu_seconds"] / rows * 1e6,
    }


def summarize(results: list[dict[str, Any]], chunk_rows: int) -> dict[str, Any]:
    by_rows = {r["rows"]: r for r in results}
    largest = max(by_rows)
    report: dict[str, Any] = {
        "benchmark": "data_scaling",
        "chunk_rows": chunk_rows,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "sizes": results,
        "baseline": f"time per row at {BASELINE_ROWS:,} rows, same run",
        "goal_time_per_row_ratio": GOAL_TIME_PER_ROW_RATIO,
        "goal_peak_rss_bytes": GOAL_PEAK_RSS_BYTES,
        "largest_rows": largest,
        "largest_peak_rss_bytes": by_rows[largest]["peak_rss_bytes"],
        "meets_memory_goal": by_rows[largest]["peak_rss_bytes"] < GOAL_PEAK_RSS_BYTES,
    }
    if BASELINE_ROWS in by_rows and largest > BASELINE_ROWS:
        ratio = (by_rows[largest]["microseconds_per_row"]
                 / by_rows[BASELINE_ROWS]["microseconds_per_row"])
        report["time_per_row_ratio_vs_baseline"] = ratio
        report["meets_time_goal"] = ratio <= GOAL_TIME_PER_ROW_RATIO
        # Informative (the goal is on wall time): the same ratio in CPU time.
        report["cpu_time_per_row_ratio_vs_baseline"] = (
            by_rows[largest]["cpu_microseconds_per_row"]
            / by_rows[BASELINE_ROWS]["cpu_microseconds_per_row"])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data_scaling")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--chunk-rows", type=int, default=20_000)
    parser.add_argument("--child", nargs=2, type=Path, metavar=("INPUT_DIR", "OUTPUT_DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        input_dir, output_dir = args.child
        print(json.dumps(run_child(input_dir, output_dir, args.chunk_rows)), flush=True)
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="shipyard-data-scaling-") as tmp:
        for rows in sorted(args.sizes):
            results.append(measure(rows, args.chunk_rows, Path(tmp)))
            print(f"[data_scaling] {rows:,} rows: {results[-1]['stage_seconds']:.1f} s "
                  f"({results[-1]['stage_cpu_seconds']:.1f} s CPU), "
                  f"peak RSS {format_bytes(results[-1]['peak_rss_bytes'])}", file=sys.stderr,
                  flush=True)
    print(json.dumps(summarize(results, args.chunk_rows), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
