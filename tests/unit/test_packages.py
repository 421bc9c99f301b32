"""The list of top-level packages has one owner (common.settings.SHIPPED_PACKAGES): the
places that cannot import it (pyproject.toml, the image's Dockerfile) must agree with it."""

from __future__ import annotations

import re
import tomllib

import pytest

from common.settings import PROJECT_ROOT, REPO_ONLY_PACKAGES, SHIPPED_PACKAGES

pytestmark = pytest.mark.unit

_PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def test_the_list_is_every_package_of_the_repository_and_only_those() -> None:
    on_disk = {path.parent.name for path in PROJECT_ROOT.glob("*/__init__.py")}
    assert set(SHIPPED_PACKAGES) | set(REPO_ONLY_PACKAGES) == on_disk
    assert not set(SHIPPED_PACKAGES) & set(REPO_ONLY_PACKAGES)


def test_setuptools_installs_the_shipped_packages() -> None:
    include = _PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.removesuffix("*") for pattern in include} == set(SHIPPED_PACKAGES)


def test_the_import_contracts_cover_every_package_in_layer_order() -> None:
    linter = _PYPROJECT["tool"]["importlinter"]
    assert linter["root_packages"] == [*SHIPPED_PACKAGES, *REPO_ONLY_PACKAGES]
    layers = next(c["layers"] for c in linter["contracts"] if c["name"].startswith("Layers"))
    layered = [name.strip() for layer in layers for name in layer.split("|")]
    assert layered == [p for p in SHIPPED_PACKAGES if p in layered]  # the constant's order
    assert set(layered) == set(SHIPPED_PACKAGES)
    registry = next(c for c in linter["contracts"] if c.get("source_modules") == ["registry"])
    assert set(registry["forbidden_modules"]) == set(linter["root_packages"]) - {
        "registry", "common"}


def test_the_image_copies_the_shipped_packages() -> None:
    dockerfile = (PROJECT_ROOT / "infra" / "image" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", dockerfile, re.MULTILINE))
    assert copied - {"requirements", "configs"} == set(SHIPPED_PACKAGES)
