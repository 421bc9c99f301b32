"""Flyte contracts are built from the stage libraries' results by one rule (no field-by-field
copies): same-named fields are taken, renamed or converted ones are given."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tasks.contracts import from_result


@dataclass(frozen=True)
class _Contract:
    version: str
    aliases: list[str]
    signature_digest: str


@dataclass(frozen=True)
class _Result:
    version: str
    aliases: tuple[str, ...]
    signature_sha256: str


@pytest.mark.unit
def test_same_named_fields_are_taken_and_the_rest_given() -> None:
    result = _Result("3", ("champion",), "ab" * 32)
    built = from_result(_Contract, result, aliases=list(result.aliases),
                        signature_digest=result.signature_sha256)
    assert built == _Contract("3", ["champion"], "ab" * 32)


@pytest.mark.unit
def test_a_contract_field_nobody_supplies_is_an_error_not_a_default() -> None:
    with pytest.raises(AttributeError, match="signature_digest"):
        from_result(_Contract, _Result("3", (), "x"), aliases=[])
