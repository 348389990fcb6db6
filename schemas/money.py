"""Money amounts: exact decimals, stored as integer units of 1/10,000 (never floats).

Four decimals keep sub-cent prices (a model call at $0.0025) exact. The ceiling keeps
every amount at 15 significant digits or fewer, so the JSON number a reply carries (a
double, JS rules) converts back to exactly the stored amount.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, Inexact, InvalidOperation

SCALE = 4
UNITS_PER_WHOLE = 10**SCALE
MAX_UNITS = 10**15 - 1
_MAX = Decimal(MAX_UNITS).scaleb(-SCALE)  # 99999999999.9999
_STEP = Decimal(1).scaleb(-SCALE)
# Enough digits for any amount up to _MAX; rounding anything away raises.
_EXACT = Context(prec=40, traps=[Inexact, InvalidOperation])
# A decimal string is plain ASCII digits: Decimal() alone would take " 12 ", "1_000",
# "+5", "5." and Arabic-Indic digits (12 to it).
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)  # an ISO 4217 code's shape


class BadAmount(ValueError):
    """Not a usable amount; the message says why, for a 422 detail."""


def parse_amount(value: object, name: str = "amount") -> int:
    """A non-negative amount (JSON number, Decimal or decimal string) as integer units."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise BadAmount(f"{name} must be a number")
    if isinstance(value, str) and not _PLAIN_DECIMAL.fullmatch(value):
        raise BadAmount(f"{name} must be a number (a plain decimal such as 12.5), got {value!r}")
    try:
        # A float goes through its shortest repr, which is the text the client sent
        # whenever that text fits a double (always, within MAX_UNITS and SCALE).
        exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise BadAmount(f"{name} must be a number, got {value!r}") from None
    if not exact.is_finite():
        raise BadAmount(f"{name} must be a finite number")
    if exact < 0:
        raise BadAmount(f"{name} must not be negative")
    if exact > _MAX:  # checked first: scaling a huge exponent would overflow
        raise BadAmount(f"{name} exceeds {_MAX}")
    try:
        kept = exact.quantize(_STEP, context=_EXACT)
    except Inexact:
        raise BadAmount(f"{name} has more than {SCALE} decimal places") from None
    return int(kept.scaleb(SCALE, context=_EXACT))


def is_currency(code: str) -> bool:
    """Whether `code` is three uppercase ASCII letters (`USD`)."""
    return _CURRENCY.fullmatch(code) is not None


def to_number(units: int) -> int | float:
    """Integer units as the JSON number they stand for (an int when whole)."""
    whole, rest = divmod(units, UNITS_PER_WHOLE)
    # Correctly rounded division of two exact integers: the nearest double to the
    # decimal, whose repr is that decimal (15 significant digits at most).
    return whole if rest == 0 else units / UNITS_PER_WHOLE
