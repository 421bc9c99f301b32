"""Fixtures for the eval tests: a real tiny model, trained by the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import subprocess_env

# A few optimizer steps: the tiny preset's architecture and tokenizer, trained for real,
# in seconds. The eval tests need a real model, not a good one.
TINY_TRAIN = {"max_steps": 3, "warmup_steps": 1, "checkpoint_every_steps": 3,
              "eval_every_steps": 3, "eval_batches": 1}


@dataclass(frozen=True)
class TinyModel:
    model_dir: Path
    digest: str
    mlflow_run_id: str


@pytest.fixture(scope="session")
def tiny_model(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    work = tmp_path_factory.mktemp("tiny-model")
    (work / "home").mkdir()
    command = [sys.executable, "-m", "training.launch",
               "--config-json", json.dumps(TINY_TRAIN), "--dataset-dir", str(tiny_dataset_dir),
               "--output-dir", str(work / "model"), "--checkpoint-dir", str(work / "ckpt"),
               "--result-json", str(work / "result.json")]
    proc = subprocess.run(command, env=subprocess_env(work / "home"), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((work / "result.json").read_text())
    return TinyModel(Path(result["model_dir"]), result["model_digest"], result["mlflow_run_id"])
