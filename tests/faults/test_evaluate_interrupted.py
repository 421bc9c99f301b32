"""An evaluate stopped while it scores leaves no engine running.

The stage runs as its own process on the local-completions path, so it starts a serving
engine for the candidate; the signal lands once that engine serves. SIGTERM: the stage's
cleanup stops the engine. SIGKILL: nothing can run in the stage, and the engine dies with
it (parent-death signal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from common.settings import PROJECT_ROOT
from testing.tiny_model import build_tiny_model

pytestmark = [pytest.mark.faults, pytest.mark.integration]

_CHILD = """
import sys
from pathlib import Path
from common.digests import model_root_digest, sha256_file
from common.settings import load_settings
from eval.config import EvalConfig
from eval.run import evaluate_model
model, split, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
evaluate_model(model_dir=model, model_digest=model_root_digest(model), training_run_id="r",
               eval_split=split, eval_split_digest=sha256_file(split),
               config=EvalConfig(model_path="local-completions", serving_engine="local",
                                 limit_per_task=400),
               settings=load_settings(), work_dir=work)
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("eval-fault") / "model")


def _engine_of(stage: subprocess.Popen[bytes], log: Path) -> psutil.Process:
    """The serving engine the stage started, once it is up (the stage is then scoring)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert stage.poll() is None, log.read_text()[-3000:]
        for child in psutil.Process(stage.pid).children(recursive=True):
            try:
                if "serving.local" in " ".join(child.cmdline()):
                    time.sleep(3.0)  # past its start-up: the harness is sending requests
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.2)
    raise AssertionError("evaluate never started its engine")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_evaluate_leaves_no_engine(model_dir: Path, tmp_path: Path,
                                               signum: int) -> None:
    log = tmp_path / "stage.log"
    with log.open("wb") as out:
        stage = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(model_dir),
             str(PROJECT_ROOT / "data/corpus/eval.jsonl"), str(tmp_path / "work")],
            cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    engine = _engine_of(stage, log)
    stage.send_signal(signum)
    assert stage.wait(timeout=120) != 0
    if signum == signal.SIGTERM:
        assert "StageInterrupted" in log.read_text()
    engine.wait(timeout=60)  # raises psutil.TimeoutExpired if the engine outlives the stage
    assert not engine.is_running()
