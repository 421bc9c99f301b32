"""registry/model_uri.py: the one parser of `models:/` URIs (verify, serve, undo)."""

from __future__ import annotations

import pytest

from registry.errors import RegistryError
from registry.model_uri import ModelUri

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "parsed"), [
    ("models:/shipyard-tiny/3", ModelUri("shipyard-tiny", version="3")),
    ("models:/shipyard-tiny@champion", ModelUri("shipyard-tiny", alias="champion")),
    ("models:/team/shipyard/12", ModelUri("team/shipyard", version="12")),  # slashes in NAME
])
def test_a_version_or_an_alias_parses_and_prints_back(text: str, parsed: ModelUri) -> None:
    assert ModelUri.parse(text) == parsed
    assert str(parsed) == text
    assert parsed.version_or_alias == (parsed.version or parsed.alias)


@pytest.mark.parametrize("text", [
    "models:/shipyard-tiny", "models:/shipyard-tiny/latest", "runs:/abc/model",
    "shipyard-tiny@champion", "models:/@champion", "models:/shipyard-tiny@", "models://3", "",
])
def test_anything_else_is_model_uri_invalid_naming_the_input(text: str) -> None:
    with pytest.raises(RegistryError) as info:
        ModelUri.parse(text)
    assert info.value.code == "MODEL_URI_INVALID" and info.value.check == "resolve"
    assert repr(text) in info.value.message and "models:/NAME/VERSION" in info.value.message
