"""The same task image as an flytekit ImageSpec, for `pyflyte run --remote --image`.

Usage (needs a Docker engine, or a remote builder such as Union's):

    pyflyte run --remote --image infra/image/image_spec.py:shipyard_image \
        workflows/pipeline.py shipyard_pipeline --preset tiny

The tasks themselves declare no image: whatever `--image` names is used, so the CPU image
(this spec) and a CUDA image (built FROM an NVIDIA PyTorch base) serve the same code.

The base image is pinned by digest, like the Dockerfile's FROM. OPERATOR: the all-zero digest is
a placeholder (no container registry was reachable where this was written); set the digest of
python:3.11-slim-bookworm (`crane digest python:3.11-slim-bookworm`). No secrets: nothing below
is a credential, and `pip_secret_mounts` is not used.
"""

from __future__ import annotations

from pathlib import Path

from flytekit import ImageSpec

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = ("python:3.11-slim-bookworm@sha256:"
              "0000000000000000000000000000000000000000000000000000000000000000")

shipyard_image = ImageSpec(
    name="shipyard",
    python_version="3.11",
    base_image=BASE_IMAGE,
    requirements=str(ROOT / "requirements" / "lock-cpu.txt"),
    apt_packages=["git"],
    env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "GX_ANALYTICS_ENABLED": "false"},
    registry="ghcr.io/shipyard",
)
