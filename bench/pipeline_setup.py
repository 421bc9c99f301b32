"""Benchmark: a fresh clone to a served model, and an unchanged re-run, in one run.

(a) Fresh clone -> model served: `git clone` this repository (its committed HEAD) into a temp
    dir and run `make pipeline` there with an empty HOME (so an empty SHIPYARD_HOME: the vLLM
    CPU venv is built too) and an empty uv cache. Only the machine's pip find-links (where the
    CPU torch wheel lives) are handed over, as the Makefile's FIND_LINKS. The console is
    timestamped line by line; the install / vLLM venv / pipeline split comes from Shipyard's
    own lines ("installing the locked dependencies", "dependencies installed", "creating the
    vLLM CPU venv" (in the background, from the run's start), "waiting for the vLLM CPU venv"
    and "vLLM CPU venv ready" (deploy waiting for the rest of it)). Compared with the 801 s
    measured before uv (issue #11: 300 s pip install, 201 s vLLM venv, ~290 s pipeline) and
    the 360 s goal: both are stated constants, not measured here.
(b) Cached re-run: `make pipeline` twice more in the same clone and HOME. The first re-run
    evaluates again (the champion is now the first run's model); the second is unchanged in
    every input. Each re-run's time is reported as a fraction of the cold pipeline measured in
    (a): the baseline of this run (goal <= 0.05).

Also counts each run's console lines (Shipyard's quiet console: third-party output goes to the
run's pipeline.log). Stops what the runs left serving (`shipyard stop`) and removes the temp
dir unless --keep. Prints one JSON object. Takes 10+ minutes; run by hand, never in CI (CI runs only
`--dry-run`, tests/bench/test_bench_smoke.py).

    .venv/bin/python -m bench.pipeline_setup [--out DIR] [--keep] [--reruns 2] [--dry-run]

`--dry-run` runs `make -n pipeline` (make prints the commands and runs none) in the clone
instead: seconds, no numbers worth publishing; it is how the script's own plumbing (clone,
console capture, report) is smoke-tested.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common.settings import PROJECT_ROOT

BEFORE_UV_SECONDS = 801.0  # issue #11, measured before uv on 2 cores (not re-measured here)
GOAL_FRESH_SECONDS = 360.0
GOAL_RERUN_FRACTION = 0.05
# Shipyard's own console lines that mark the phases of a fresh `make pipeline`.
MARKS = {
    "install_start": re.compile(r"^shipyard: installing the locked dependencies"),
    "install_end": re.compile(r"^shipyard: dependencies installed"),
    "vllm_venv_start": re.compile(r"\[shipyard\] creating the vLLM CPU venv"),
    # the venv is created in the background from the run's start; deploy waits for the rest
    "vllm_venv_wait": re.compile(r"\[shipyard\] waiting for the vLLM CPU venv"),
    "vllm_venv_end": re.compile(r"\[shipyard\] vLLM CPU venv ready"),
    "deployed": re.compile(r"\[shipyard\] deploy \S+: PASS"),
}


def machine_find_links() -> str:
    """The pip find-links this machine uses (what the Makefile would compute), read with the
    real HOME: uv reads no pip configuration."""
    for key in ("UV_FIND_LINKS", "PIP_FIND_LINKS"):
        if os.environ.get(key):
            return os.environ[key]
    found = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                           capture_output=True, text=True, check=False)
    return found.stdout.strip() if found.returncode == 0 else ""


def timed_run(command: list[str], cwd: Path, env: dict[str, str],
              console_path: Path) -> dict[str, Any]:
    """Run `command`, keep its console (stdout + stderr, as a user sees it) with each line's
    offset in seconds, and note when each MARKS line first appeared. Lines end at "\n" only:
    a progress bar redrawn with "\r" is one line on a terminal, and counts as one."""
    began = time.monotonic()
    marks: dict[str, float] = {}
    lines = 0
    with console_path.open("w", buffering=1) as console, subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            offset = time.monotonic() - began
            line = raw.decode(errors="replace").rsplit("\r", 1)[-1]  # what the terminal shows
            console.write(f"{offset:8.1f} {line}")
            lines += 1
            for name, pattern in MARKS.items():
                if name not in marks and pattern.search(line):
                    marks[name] = round(offset, 1)
    return {"seconds": round(time.monotonic() - began, 1), "exit_code": process.returncode,
            "console_lines": lines, "marks": marks, "console": str(console_path)}


def split_fresh(run: dict[str, Any], home: Path) -> dict[str, float | None]:
    """install / vLLM venv / pipeline seconds from a fresh run's marks. The venv is created in
    the background while the first stages run: only the time deploy spent waiting for it
    (`vllm_venv_waited_seconds`) is taken out of the pipeline's time; how long the install
    itself took is read from its background log."""
    marks = run["marks"]
    install = marks.get("install_end")
    waited = 0.0
    if "vllm_venv_end" in marks:
        waited = marks["vllm_venv_end"] - marks.get("vllm_venv_wait",
                                                    marks.get("vllm_venv_start", 0.0))
    pipeline = None if install is None else run["seconds"] - install - waited
    return {"install_seconds": install, "vllm_venv_seconds": background_venv_seconds(home),
            "vllm_venv_waited_seconds": round(waited, 1),
            "pipeline_seconds": None if pipeline is None else round(pipeline, 1)}


def background_venv_seconds(home: Path) -> float | None:
    """`ready in N s` from the background installer's log, if the run made the venv."""
    for log in sorted((home / ".shipyard" / "venvs").glob("*.background.log")):
        found = re.search(r"vLLM CPU venv ready in (\d+) s", log.read_text(errors="replace"))
        if found:
            return float(found.group(1))
    return None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_setup",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="where to keep the consoles (default: inside the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the clone and its HOME")
    parser.add_argument("--reruns", type=int, default=2)
    parser.add_argument("--dry-run", action="store_true",
                        help="make -n: print the commands, run none (a smoke test of this script)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="shipyard-bench-setup-"))
    out = args.out or root / "consoles"
    out.mkdir(parents=True, exist_ok=True)
    clone, home = root / "shipyard", root / "home"
    home.mkdir()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    # The machine's pip settings from the environment stay (PIP_FIND_LINKS: the CPU torch wheel
    # the vLLM venv needs too); caches, venvs and Shipyard's own settings do not.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("VIRTUAL_ENV", "SHIPYARD_", "MLFLOW_", "UV_CACHE", "PIP_CACHE"))}
    find_links = machine_find_links()
    if find_links:
        env.setdefault("PIP_FIND_LINKS", find_links)
    # The interpreter `python3` is on this machine, by absolute path: a pyenv shim finds its
    # versions through HOME, which is empty here.
    python = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    env.update(HOME=str(home), UV_CACHE_DIR=str(root / "uv-cache"),
               XDG_CACHE_HOME=str(home / ".cache"))
    make = ["make", *(["-n"] if args.dry_run else []), "pipeline", f"PYTHON={python}"] + (
        [f"FIND_LINKS={find_links}"] if find_links else [])
    result: dict[str, Any] = {
        "benchmark": "pipeline_setup", "commit": commit, "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "find_links": find_links, "make": make,
        "dry_run": args.dry_run,
        "load_average_before": load_average()}
    try:
        began = time.monotonic()
        subprocess.run(["git", "clone", "--quiet", str(PROJECT_ROOT), str(clone)], check=True)
        clone_seconds = time.monotonic() - began
        fresh = timed_run(make, clone, env, out / "fresh.console.txt")
        fresh["seconds"] = round(fresh["seconds"] + clone_seconds, 1)
        fresh.update(split_fresh(fresh, home), clone_seconds=round(clone_seconds, 1))
        result["fresh_clone_to_served"] = {
            **fresh, "baseline_before_uv_seconds": BEFORE_UV_SECONDS,
            "goal_seconds": GOAL_FRESH_SECONDS,
            "speedup_vs_before_uv": round(BEFORE_UV_SECONDS / fresh["seconds"], 2),
            "goal_met": fresh["exit_code"] == 0 and fresh["seconds"] <= GOAL_FRESH_SECONDS}
        if fresh["exit_code"] != 0:
            return 1
        cold = fresh["pipeline_seconds"]
        reruns = []
        for index in range(1, args.reruns + 1):
            rerun = timed_run(make, clone, env, out / f"rerun{index}.console.txt")
            rerun["fraction_of_cold_pipeline"] = round(rerun["seconds"] / cold, 3) if cold else None
            reruns.append(rerun)
            if rerun["exit_code"] != 0:
                break
        last = reruns[-1]
        result["cached_rerun"] = {
            "cold_pipeline_seconds": cold, "reruns": reruns,
            "goal_fraction": GOAL_RERUN_FRACTION,
            "goal_met": last["exit_code"] == 0 and last["fraction_of_cold_pipeline"] is not None
            and last["fraction_of_cold_pipeline"] <= GOAL_RERUN_FRACTION}
        return 0 if all(r["exit_code"] == 0 for r in reruns) else 1
    finally:
        stop = clone / ".venv" / "bin" / "shipyard"
        if stop.exists():
            subprocess.run([str(stop), "stop"], cwd=clone, env=env, capture_output=True,
                           check=False, timeout=300)
        result["load_average_after"] = load_average()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
