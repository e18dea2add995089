"""Standard Webhooks signatures (https://www.standardwebhooks.com).

A request carries three headers::

    webhook-id: msg_...                     (the event id, the same on every retry)
    webhook-timestamp: 1700000000           (unix seconds, when this attempt was signed)
    webhook-signature: v1,<base64> [v1,<base64> ...]

where each signature is ``base64(HMAC-SHA256(secret, f"{id}.{timestamp}." + body))``, one per
live secret (several while a secret is being rotated). Secrets are ``whsec_`` + base64 of random
bytes. The official ``standardwebhooks`` and ``svix`` libraries verify these unchanged.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Sequence

__all__ = [
    "SECRET_PREFIX",
    "build_headers",
    "decode_secret",
    "generate_secret",
    "sign",
    "signature_digest",
    "signature_header",
    "signed_content",
]

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32

_MIN_SECRET_BYTES = 16  # the spec asks for 24..64; accept a little less from older senders
_MAX_SECRET_BYTES = 1024


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret; the prefix is optional.

    Raises ``ValueError`` with a sentence that never repeats the secret itself.
    """
    if not isinstance(secret, str):
        raise ValueError(f"a webhook secret must be a string, not {type(secret).__name__}")
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    if not encoded:
        raise ValueError("the webhook secret is empty; expected 'whsec_' followed by base64")
    # Other implementations emit unpadded base64; restore the padding before strict decoding.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "the webhook secret is not valid: expected 'whsec_' followed by standard base64"
        ) from None
    if not _MIN_SECRET_BYTES <= len(key) <= _MAX_SECRET_BYTES:
        raise ValueError(
            f"the webhook secret decodes to {len(key)} bytes; "
            f"expected {_MIN_SECRET_BYTES} to {_MAX_SECRET_BYTES} (32 is usual)"
        )
    return key


def signed_content(msg_id: str, timestamp: int | str, body: bytes) -> bytes:
    """The exact bytes that are signed: ``b"{id}.{timestamp}." + body``."""
    return f"{msg_id}.{timestamp}.".encode() + body


@functools.lru_cache(maxsize=1024)
def _keyed(secret_bytes: bytes) -> hmac.HMAC:
    # An HMAC keyed once; copying it skips the two key-pad blocks on every message (~20% faster
    # than hmac.new for a 1 KiB body). Bounded, and keys live in memory anyway.
    return hmac.new(secret_bytes, digestmod=hashlib.sha256)


def signature_digest(secret_bytes: bytes, content: bytes) -> bytes:
    """Raw HMAC-SHA256 of already-built signed content (see ``signed_content``)."""
    mac = _keyed(secret_bytes).copy()
    mac.update(content)
    return mac.digest()


def _v1(digest: bytes) -> str:
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign(secret_bytes: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, ``v1,<base64 HMAC-SHA256>``, for one secret."""
    return _v1(signature_digest(secret_bytes, signed_content(msg_id, timestamp, body)))


def signature_header(secrets: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one space-separated signature per live secret."""
    if isinstance(secrets, bytes | bytearray) or not secrets:
        raise ValueError("signature_header needs a non-empty sequence of secret keys")
    content = signed_content(msg_id, timestamp, body)  # built once for every secret
    return " ".join(_v1(signature_digest(key, content)) for key in secrets)


def build_headers(
    secrets: Sequence[bytes], msg_id: str, timestamp: int | None, body: bytes
) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` for one request.

    ``timestamp`` is the attempt's unix time in seconds (``None``: now). The id is the event id:
    it must stay the same on every retry so receivers can de-duplicate.
    """
    _check_msg_id(msg_id)
    if timestamp is None:
        timestamp = int(time.time())
    elif isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("the webhook timestamp must be a non-negative integer (unix seconds)")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }


def _check_msg_id(msg_id: str) -> None:
    # The id goes into a header verbatim: no whitespace or control characters (header injection),
    # and printable ASCII so every receiver library reads back the same bytes.
    if not msg_id or not msg_id.isascii() or not msg_id.isprintable() or " " in msg_id:
        raise ValueError("the webhook id must be non-empty printable ASCII without spaces")
