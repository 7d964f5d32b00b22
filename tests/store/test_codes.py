"""The scripts' answer codes: each enum holds exactly the codes its Lua script returns."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from edge.store.codes import CreditCode, ReplayCode, ReserveCode, SettleCode


def returned_codes(script: str) -> set[int]:
    """First elements of the tables ``script`` returns (``return {-5, 0}`` → -5)."""
    source = resources.files("edge.store.lua").joinpath(f"{script}.lua").read_text()
    code = "\n".join(line.split("--", 1)[0] for line in source.splitlines())
    return {int(n) for n in re.findall(r"\breturn\s*\{\s*(-?\d+)", code)}


@pytest.mark.parametrize(("script", "codes"), [
    ("reserve", ReserveCode), ("settle", SettleCode), ("credit", CreditCode),
    ("replay", ReplayCode)])
def test_each_enum_names_every_code_its_script_answers(script: str, codes) -> None:
    assert returned_codes(script) == {int(member) for member in codes}


def test_the_numbers_are_the_scripts() -> None:
    assert (ReserveCode.RESERVED, ReserveCode.NOT_LOADED, ReserveCode.INSUFFICIENT,
            ReserveCode.RPM_LIMITED, ReserveCode.TPM_LIMITED, ReserveCode.DUPLICATE,
            ReserveCode.HEALING) == (1, 0, -1, -2, -3, -4, -5)
    assert ReserveCode(-5) is ReserveCode.HEALING and SettleCode(0) is SettleCode.NO_RESERVATION
