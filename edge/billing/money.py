"""Money as integers: micro-dollars everywhere, rounding only in one place.

1 USD = 1,000,000 micro-dollars (µ$). Prices are micro-dollars per one million
tokens, so a request's exact cost is ``(tokens × price) / 1e6`` µ$; the only
rounding is :func:`token_cost`'s ceiling, which never undercharges by a fraction.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, DecimalException, InvalidOperation

__all__ = ["MICROS_PER_USD", "format_usd", "parse_usd", "token_cost"]

#: Micro-dollars in one US dollar.
MICROS_PER_USD = 1_000_000
#: A written amount: ASCII digits, an optional point and exponent.
_AMOUNT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")

#: Tokens a price is quoted for.
PRICE_UNIT_TOKENS = 1_000_000


def parse_usd(text: str | int | float | Decimal) -> int:
    """Turn a dollar amount such as ``"0.15"`` into micro-dollars, exactly.

    Raises:
      ValueError: not a finite number, or finer than a micro-dollar.
    """
    if isinstance(text, str) and not _AMOUNT.fullmatch(text.strip()):
        # Decimal also reads "1_0" and non-ASCII digits; an amount of money is plainer.
        raise ValueError(f"not an amount of dollars: {text[:40]!r}")
    try:
        amount = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"not an amount of dollars: {text!r}") from None
    if not amount.is_finite() or abs(amount.adjusted()) > 15:
        raise ValueError(f"not an amount of dollars: {str(text)[:40]!r}")
    try:
        micros = amount * MICROS_PER_USD
        exact = micros == micros.to_integral_value()
    except DecimalException:
        raise ValueError(f"not an amount of dollars: {str(text)[:40]!r}") from None
    if not exact:
        raise ValueError(f"{str(text)[:40]!r} is finer than one micro-dollar")
    return int(micros)


def format_usd(micros: int) -> str:
    """Micro-dollars as a dollar string with six decimals, e.g. ``"1.250000"``."""
    return str((Decimal(micros) / MICROS_PER_USD).quantize(Decimal("0.000001"), ROUND_HALF_EVEN))


def token_cost(prompt_tokens: int, completion_tokens: int,
               input_price: int, output_price: int) -> int:
    """Cost in micro-dollars of a request, rounded up to the next micro-dollar.

    Parameters:
      prompt_tokens: input tokens.
      completion_tokens: output tokens.
      input_price: micro-dollars per 1M input tokens.
      output_price: micro-dollars per 1M output tokens.
    """
    numerator = prompt_tokens * input_price + completion_tokens * output_price
    return -(-numerator // PRICE_UNIT_TOKENS)
