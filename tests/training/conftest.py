"""Helpers to run the real training entry point under torchrun, as Flyte Elastic does."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import subprocess_env

# Short but long enough to cross warmup, two checkpoints and a validation pass.
TEST_TRAIN = {"max_steps": 12, "checkpoint_every_steps": 4, "eval_every_steps": 6,
              "warmup_steps": 3, "eval_batches": 2}


@dataclass
class RankRun:
    returncode: int
    output: str
    result: dict[str, Any] | None
    output_dir: Path
    checkpoint_dir: Path


def torchrun_command(nproc: int, config: dict[str, Any], dataset_dir: Path, work: Path
                     ) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", "-m", "training.launch",
        "--config-json", json.dumps(config), "--dataset-dir", str(dataset_dir),
        "--output-dir", str(work / "model"), "--checkpoint-dir", str(work / "checkpoints"),
        "--result-json", str(work / "result.json"),
    ]


def run_ranks(nproc: int, config: dict[str, Any], dataset_dir: Path, work: Path,
              home: Path, timeout_seconds: float = 600) -> RankRun:
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        torchrun_command(nproc, config, dataset_dir, work), env=subprocess_env(home),
        capture_output=True, text=True, timeout=timeout_seconds,
    )
    result_path = work / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else None
    return RankRun(proc.returncode, proc.stdout + proc.stderr, result, work / "model",
                   work / "checkpoints")
