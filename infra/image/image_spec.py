"""The same task image as an flytekit ImageSpec, for `pyflyte run --remote --image`.

Usage (needs a Docker engine, or a remote builder such as Union's):

    pyflyte run --remote --image infra/image/image_spec.py:shipyard_image \
        workflows/pipeline.py shipyard_pipeline --preset tiny

The tasks themselves declare no image: whatever `--image` names is used, so the CPU image
(this spec) and a CUDA image (built FROM an NVIDIA PyTorch base) serve the same code.
"""

from __future__ import annotations

from pathlib import Path

from flytekit import ImageSpec

ROOT = Path(__file__).resolve().parents[2]

shipyard_image = ImageSpec(
    name="shipyard",
    python_version="3.11",
    requirements=str(ROOT / "requirements" / "lock-cpu.txt"),
    apt_packages=["git"],
    env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "GX_ANALYTICS_ENABLED": "false"},
    registry="ghcr.io/shipyard",
)
