"""registry/model_uri.py: the one parser of `models:/` URIs (verify, serve, undo)."""

from __future__ import annotations

import pytest

from common.errors import StageError
from registry.errors import RegistryError
from registry.model_uri import ChampionReference, ModelReference, ModelUri

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


def test_a_model_reference_pins_a_version_to_its_digest() -> None:
    digest = "ab" * 32
    reference = ModelReference("team/shipyard", "3", digest)
    assert reference.uri == ModelUri("team/shipyard", version="3")
    assert str(reference) == f"models:/team/shipyard/3 sha256:{digest}"
    assert str(ChampionReference(reference)) == str(reference)
    assert str(ChampionReference()) == "none"
    assert ChampionReference() != ChampionReference(reference)


@pytest.mark.parametrize(("version", "digest", "code"), [
    ("latest", "ab" * 32, "MODEL_URI_INVALID"),     # a version is a number, not an alias
    ("3", "sha256:" + "ab" * 32, "DIGEST_INVALID"),  # the bare hex, as the tags hold it
    ("3", "AB" * 32, "DIGEST_INVALID"),
    ("3", "", "DIGEST_INVALID"),                     # a version without its digest tag
])
def test_a_model_reference_that_is_not_one_is_refused_naming_it(version: str, digest: str,
                                                                 code: str) -> None:
    with pytest.raises(StageError) as info:
        ModelReference("shipyard-tiny", version, digest)
    assert info.value.code == code
    assert "shipyard-tiny" in str(info.value)
