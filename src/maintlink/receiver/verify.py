"""Verify a maintlink webhook in your own application.

    from maintlink.receiver import verify, WebhookVerificationError

    try:
        event = verify(request_body, request_headers, os.environ["MAINTLINK_WEBHOOK_SECRET"])
    except WebhookVerificationError:
        return Response(status_code=400)

Pass the raw body exactly as received (bytes), not a re-serialised copy. During a secret
rotation pass both secrets; a request signed with either is accepted. Requests using the Svix
header names (``svix-id`` ...) are accepted as well.
"""

from __future__ import annotations

import binascii
import functools
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from maintlink.webhooks.signing import decode_secret, signature_digest, signed_content

__all__ = [
    "DEFAULT_TOLERANCE",
    "InvalidPayloadError",
    "InvalidSecretError",
    "InvalidSignatureError",
    "InvalidTimestampError",
    "MissingHeaderError",
    "TimestampTooNewError",
    "TimestampTooOldError",
    "WebhookVerificationError",
    "verify",
]

DEFAULT_TOLERANCE = 300  # seconds either side of now, as the Standard Webhooks spec advises

_MAX_TIMESTAMP_DIGITS = 12  # unix seconds until year 33658; longer is not a timestamp


class WebhookVerificationError(Exception):
    """The request is not a genuine, fresh maintlink webhook; answer 4xx and drop it."""


class MissingHeaderError(WebhookVerificationError):
    """A required ``webhook-*`` header is absent or empty."""

    def __init__(self, header: str) -> None:
        super().__init__(f"missing required header {header!r}")
        self.header = header


class InvalidTimestampError(WebhookVerificationError):
    """``webhook-timestamp`` is not a whole number of unix seconds."""


class TimestampTooOldError(WebhookVerificationError):
    """The timestamp is further in the past than the tolerance (possible replay)."""


class TimestampTooNewError(WebhookVerificationError):
    """The timestamp is further in the future than the tolerance (clock skew or forgery)."""


class InvalidSignatureError(WebhookVerificationError):
    """No ``v1`` signature in the header matched any of the secrets."""


class InvalidSecretError(WebhookVerificationError, ValueError):
    """The configured secret is malformed: a set-up error on the receiving side."""


class InvalidPayloadError(WebhookVerificationError):
    """The signed body is not a JSON object."""


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret_or_secrets: str | Sequence[str],
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a webhook's signature and freshness and return its parsed JSON payload.

    ``headers`` may be any mapping; names are matched case-insensitively, and ``svix-id``,
    ``svix-timestamp``, ``svix-signature`` stand in for the ``webhook-*`` ones. Every ``v1``
    signature in the header is compared, in constant time, with the expected one for every
    secret; other versions are ignored. Raises a subclass of ``WebhookVerificationError``.
    """
    keys = _decode_secrets(secret_or_secrets)
    if tolerance < 0:
        raise ValueError("tolerance must be zero or more seconds")
    if isinstance(body, str):
        try:
            body = body.encode()
        except UnicodeEncodeError:
            raise InvalidPayloadError("the body is not valid UTF-8 text") from None

    msg_id, raw_timestamp, signatures = _read_headers(headers)

    if not (raw_timestamp.isascii() and raw_timestamp.isdigit()) or (
        len(raw_timestamp) > _MAX_TIMESTAMP_DIGITS
    ):
        raise InvalidTimestampError("webhook-timestamp is not a whole number of unix seconds")
    timestamp = int(raw_timestamp)
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise TimestampTooOldError(
            f"the webhook timestamp is {int(current - timestamp)} s old; "
            f"the tolerance is {tolerance} s"
        )
    if timestamp > current + tolerance:
        raise TimestampTooNewError(
            f"the webhook timestamp is {int(timestamp - current)} s in the future; "
            f"the tolerance is {tolerance} s"
        )

    # The signed content uses the header text as sent, so nothing is re-formatted in between.
    content = signed_content(msg_id, raw_timestamp, body)
    expected = [signature_digest(key, content) for key in keys]
    candidates = _v1_signatures(signatures)
    if not candidates:
        raise InvalidSignatureError("webhook-signature holds no v1 signature")
    matched = False
    for candidate in candidates:
        for digest in expected:
            # No early exit: the time taken does not depend on which pair matched.
            matched |= hmac.compare_digest(candidate, digest)
    if not matched:
        raise InvalidSignatureError("no signature matched the webhook secret")

    # The standard library, not orjson: it keeps integers beyond 64 bits exact.
    try:
        payload = _JSON.decode(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidPayloadError("the body is not valid UTF-8 JSON") from None
    if not isinstance(payload, dict):
        raise InvalidPayloadError("the body is not a JSON object")
    return payload


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity are Python extensions


# One decoder for all calls: json.loads with any option builds a new decoder each time.
_JSON = json.JSONDecoder(parse_constant=_refuse_constant)


def _decode_secrets(secret_or_secrets: str | Sequence[str]) -> list[bytes]:
    # A str is itself a Sequence[str]: test it first.
    secrets = (secret_or_secrets,) if isinstance(secret_or_secrets, str) else secret_or_secrets
    if isinstance(secrets, bytes | bytearray) or not secrets:
        raise InvalidSecretError("no webhook secret was given")
    return [_decode_secret(secret) for secret in secrets]


@functools.lru_cache(maxsize=64)
def _decode_secret(secret: str) -> bytes:
    # Cached: a receiver passes the same one or two secrets on every request.
    try:
        return decode_secret(secret)
    except ValueError as exc:
        raise InvalidSecretError(str(exc)) from None


def _read_headers(headers: Mapping[str, str]) -> tuple[str, str, str]:
    # Fast path: most frameworks hand over lower-case names or a case-insensitive mapping.
    get = headers.get
    msg_id = get("webhook-id") or get("svix-id")
    timestamp = get("webhook-timestamp") or get("svix-timestamp")
    signature = get("webhook-signature") or get("svix-signature")
    if not (msg_id and timestamp and signature):
        lowered = {key.lower(): value for key, value in headers.items()}
        msg_id = lowered.get("webhook-id") or lowered.get("svix-id")
        timestamp = lowered.get("webhook-timestamp") or lowered.get("svix-timestamp")
        signature = lowered.get("webhook-signature") or lowered.get("svix-signature")
    msg_id = _present("webhook-id", msg_id)
    timestamp = _present("webhook-timestamp", timestamp)
    signature = _present("webhook-signature", signature)
    return msg_id, timestamp, signature


def _present(name: str, value: str | None) -> str:
    if not isinstance(value, str) or not (value := value.strip()):
        raise MissingHeaderError(name)
    return value


def _v1_signatures(header: str) -> list[bytes]:
    out: list[bytes] = []
    for item in header.split():
        version, _, encoded = item.partition(",")
        if version != "v1" or not encoded:
            continue  # another scheme (v1a, ...) or a stray token: not ours to judge
        try:
            out.append(binascii.a2b_base64(encoded, strict_mode=True))
        except (binascii.Error, ValueError):
            continue
    return out
