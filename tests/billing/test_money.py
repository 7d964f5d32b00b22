"""Money is integers: exact parsing, one rounding (up), no floats."""

from __future__ import annotations

from decimal import Decimal

import pytest

from edge.billing.money import format_usd, parse_usd, token_cost


@pytest.mark.parametrize(("text", "micros"), [
    ("1", 1_000_000), ("0.15", 150_000), ("0.000001", 1), (" 2.5 ", 2_500_000),
    (Decimal("10.10"), 10_100_000), (3, 3_000_000), ("-1.5", -1_500_000), ("1e-3", 1000),
])
def test_parse_usd(text, micros) -> None:
    assert parse_usd(text) == micros


@pytest.mark.parametrize("text", ["", "abc", "0.0000001", "NaN", "inf", "1,5", "1_0",
                                  "\u0661\u0660", "１０", "0x10", "1.5.2"])
def test_parse_usd_refuses(text) -> None:
    with pytest.raises(ValueError):
        parse_usd(text)


def test_format_usd() -> None:
    assert format_usd(1) == "0.000001"
    assert format_usd(12_345_678) == "12.345678"
    assert format_usd(-5) == "-0.000005"


def test_token_cost_rounds_up_to_the_next_micro_dollar() -> None:
    # 3 tokens at $0.50/1M = 1.5 µ$ -> 2 µ$
    assert token_cost(3, 0, 500_000, 0) == 2
    assert token_cost(2, 0, 500_000, 0) == 1
    assert token_cost(0, 0, 500_000, 1_500_000) == 0
    # input and output are added before rounding, not rounded each
    assert token_cost(1, 1, 500_000, 500_000) == 1


def test_token_cost_is_exact_for_large_counts() -> None:
    # 10^12 tokens at a price that is not a round number: no float error
    assert token_cost(10**12, 10**12, 123_457, 987_653) == (123_457 + 987_653) * 10**6
