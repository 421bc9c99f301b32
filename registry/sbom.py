"""A CycloneDX 1.5 SBOM of the Python environment that built the model.

The register stage runs in the same image and virtual environment as training (one image per
workflow, see infra/), so the distributions installed here are the ones training imported.
Each component carries a PyPI package URL, which is what vulnerability scanners match on.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

SPEC_VERSION = "1.5"
MEDIA_TYPE = "application/vnd.cyclonedx+json"


def pypi_purl(name: str, version: str) -> str:
    """`pkg:pypi/NAME@VERSION` with the name normalized as PEP 503 and the purl spec say."""
    normalized = re.sub(r"[-_.]+", "-", name).lower()
    # A local version label such as `+cpu` must be percent-encoded in a purl.
    return f"pkg:pypi/{normalized}@{quote(version, safe='')}"


def environment_sbom(
    *, tool_name: str = "shipyard-registry", tool_version: str = "0.1.0"
) -> dict[str, Any]:
    components = [_component(name, version, dist) for name, version, dist in _distributions()]
    return {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "tools": {
                "components": [{"type": "application", "name": tool_name, "version": tool_version}]
            },
            "component": {
                "type": "application",
                "bom-ref": "training-environment",
                "name": "shipyard-training-environment",
                "version": platform.python_version(),
            },
            "properties": [
                {"name": "python:version", "value": sys.version.split()[0]},
                {"name": "python:implementation", "value": platform.python_implementation()},
                {"name": "platform", "value": platform.platform()},
            ],
        },
        "components": components,
        "dependencies": [
            {"ref": "training-environment", "dependsOn": [c["bom-ref"] for c in components]}
        ],
    }


@functools.cache
def _distributions() -> tuple[tuple[str, str, importlib.metadata.Distribution], ...]:
    # A name can be installed twice on sys.path (e.g. an editable project): the first one on
    # the path is what `import` sees, so that is the one recorded.
    seen: dict[str, tuple[str, str, importlib.metadata.Distribution]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        seen.setdefault(key, (name, dist.version, dist))
    # Cached: reading ~400 METADATA files takes about a second, and a process does not
    # change its own environment between two registrations.
    return tuple(seen[key] for key in sorted(seen))


def _component(name: str, version: str, dist: importlib.metadata.Distribution) -> dict[str, Any]:
    purl = pypi_purl(name, version)
    component: dict[str, Any] = {
        "type": "library",
        "bom-ref": purl,
        "name": name,
        "version": version,
        "purl": purl,
    }
    license_expressions = dist.metadata.get_all("License-Expression") or []
    if license_expressions:
        component["licenses"] = [{"expression": license_expressions[0]}]
    return component
