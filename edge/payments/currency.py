"""Stripe's minor units, and the one exact conversion between them and balances.

Balances are micro-units: a millionth of the configured currency. Stripe's API
counts amounts in a minor unit that depends on the currency
(https://docs.stripe.com/currencies#minor-units), and refuses some amounts that
unit could express; every amount sent to or read from Stripe converts here.

This module imports nothing of the portal.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

__all__ = ["MinorUnit", "minor_unit", "to_micros", "to_minor"]

#: Micro-units in one unit of the currency (as ``edge.billing.money.MICROS_PER_USD``).
MICROS_PER_UNIT = 1_000_000
#: API amounts are whole units: 500 is ¥500.
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf vnd vuv xaf xof xpf".split())
#: API amounts are thousandths, and Stripe's partners need the last digit to be 0.
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())
#: API amounts are hundredths (500 is 5 ISK), but only whole units are charged.
WHOLE_UNITS = frozenset("huf isk twd ugx".split())


@dataclasses.dataclass(frozen=True, slots=True)
class MinorUnit:
    """How Stripe counts one currency's amounts."""

    currency: str
    #: Digits after the point in Stripe's amounts (500 is 5.00 for 2).
    decimals: int
    #: Stripe's amounts must be a multiple of this many minor units.
    step: int
    #: Why, for messages.
    rule: str

    @property
    def micros(self) -> int:
        """Micro-units in one minor unit."""
        return MICROS_PER_UNIT // int(10 ** self.decimals)  # int(): `**` may give a float

    @property
    def step_micros(self) -> int:
        """The finest amount Stripe charges, in micro-units: every amount is a multiple."""
        return self.micros * self.step

    @property
    def step_text(self) -> str:
        """That finest amount as written, with the code: ``0.01 USD``, ``1 JPY``."""
        step = (Decimal(self.step_micros) / MICROS_PER_UNIT).normalize()
        return f"{step:f} {self.currency.upper()}"


def minor_unit(currency: str) -> MinorUnit:
    """Stripe's rules for ``currency`` (a lower-case ISO code; others are two-decimal)."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return MinorUnit(code, 0, 1, f"Stripe counts {code} in whole units")
    if code in THREE_DECIMAL:
        return MinorUnit(code, 3, 10, f"Stripe counts {code} in thousandths ending in 0")
    if code in WHOLE_UNITS:
        return MinorUnit(code, 2, 100, f"Stripe charges {code} in whole units only")
    return MinorUnit(code, 2, 1, f"Stripe counts {code} in hundredths")


def to_minor(micros: int, currency: str) -> int:
    """Micro-units as a Stripe amount in ``currency``, exactly.

    Raises:
      ValueError: Stripe cannot charge that amount (not a multiple of its step).
    """
    unit = minor_unit(currency)
    if micros % unit.step_micros:
        raise ValueError(f"{micros} micro-units is not a multiple of {unit.step_text}: "
                         f"{unit.rule}")
    return micros // unit.micros


def to_micros(amount: int, currency: str) -> int:
    """A Stripe amount in ``currency`` as micro-units; always exact (a minor unit is at
    least a micro-unit), and never refused: it is what Stripe says moved."""
    return amount * minor_unit(currency).micros
