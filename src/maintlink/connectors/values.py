"""Reading the values systems send: the conversions every connector needs alike."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any


def parse_datetime(value: Any) -> datetime | None:
    """ISO 8601 (with any offset, or none: UTC) or a date, as an aware UTC datetime; None
    for empty or unreadable values."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_decimal(value: Any) -> Decimal | None:
    """A number (or numeric string) as a Decimal; None for empty, unreadable, boolean or
    non-finite values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None
