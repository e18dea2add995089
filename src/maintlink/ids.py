"""Identifiers and tokens.

Ids are a type prefix plus a time-ordered 26-character base32 string (48-bit
milliseconds + 80 random bits, as in ULID), so sorting by id sorts by creation time and
cursor pagination needs no second column. Tokens are 32 random bytes in base62 behind a
prefix; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters (10 bits) per lookup: an id is 13 lookups instead of 26 shifts.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_SHIFTS = tuple(range(120, -1, -10))
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

_last_ms = 0
_last_rand = 0


def _ulid() -> str:
    global _last_ms, _last_rand
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:  # same millisecond: stay monotonic within this process
        ms = _last_ms
        rand = _last_rand + 1
    else:
        rand = secrets.randbits(80)
    _last_ms, _last_rand = ms, rand
    value = (ms << 80) | (rand & ((1 << 80) - 1))
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def new_id(prefix: str) -> str:
    return f"{prefix}_{_ulid()}"


def new_token(prefix: str, nbytes: int = 32) -> str:
    number = int.from_bytes(secrets.token_bytes(nbytes), "big")
    chars = []
    while number:
        number, rem = divmod(number, 62)
        chars.append(_BASE62[rem])
    return f"{prefix}_{''.join(reversed(chars)).rjust(43, '0')}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


def token_hint(token: str) -> str:
    """What lists show of a secret: its prefix and last four characters."""
    head, _, body = token.partition("_")
    return f"{head}_...{body[-4:]}"
