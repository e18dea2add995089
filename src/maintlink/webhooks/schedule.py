"""When a failed delivery is tried again.

Svix's schedule by default: after the first try, waits of 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and
10 h (eight attempts over about 27.6 hours), each moved by up to +-20 % so that deliveries that
failed together do not all come back at the same second. A receiver that answers 429 or 503 with
``Retry-After`` is given at least that long, up to an operator-set ceiling.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime

__all__ = ["RETRY_AFTER_STATUSES", "next_delay", "parse_retry_after", "retry_delay"]

# Answers whose Retry-After header we honour.
RETRY_AFTER_STATUSES = frozenset({429, 503})


def next_delay(
    attempt_number: int,
    schedule: Sequence[float],
    jitter: float,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait after failed attempt ``attempt_number`` (1 = the first try), or ``None``
    when the schedule is exhausted and the delivery has failed for good."""
    index = attempt_number - 1
    if index < 0 or index >= len(schedule):
        return None
    base = float(schedule[index])
    if jitter <= 0:
        return base
    spread = (rng or random).uniform(-jitter, jitter)
    return max(0.0, base * (1.0 + spread))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP-date (RFC 9110 10.2.3).

    A date in the past means "now" (0); anything unreadable is ``None`` (ignored).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an obsolete date form without a zone: HTTP dates are GMT
        return None
    return max(0.0, (when - now).total_seconds())


def retry_delay(
    attempt_number: int,
    *,
    schedule: Sequence[float],
    jitter: float,
    status_code: int | None = None,
    retry_after: str | None = None,
    max_retry_after: float,
    now: datetime,
    rng: random.Random | None = None,
) -> float | None:
    """The wait before the next attempt, ``Retry-After`` included, or ``None`` when exhausted.

    ``Retry-After`` on 429/503 can only lengthen the wait (a receiver cannot make us retry
    faster than the schedule), and never beyond ``max_retry_after``.
    """
    delay = next_delay(attempt_number, schedule, jitter, rng)
    if delay is None:
        return None
    if status_code in RETRY_AFTER_STATUSES:
        asked = parse_retry_after(retry_after, now)
        if asked is not None:
            delay = max(delay, min(asked, float(max_retry_after)))
    return delay
