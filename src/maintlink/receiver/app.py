"""A ready-made webhook endpoint: verify, queue, answer 200. Nothing else happens here.

    from maintlink.receiver.app import create_receiver_app
    from maintlink.receiver.queue import EventQueue

    app = create_receiver_app(["whsec_..."], EventQueue("events.sqlite3"))
    # uvicorn.run(app, port=9000)

``POST /webhooks`` (the ``path``):

* 200 ``{"received": true, "duplicate": false}`` once the delivery is committed to the queue
  (``duplicate: true`` when its ``webhook-id`` was seen before; nothing more is stored);
* 400 ``{"error": {"code", "message"}}`` when the request is not a genuine, fresh maintlink
  webhook (missing headers, bad signature, timestamp outside the tolerance, body not a JSON
  object). 400 rather than 401: there is no credential the sender could add, and every non-2xx
  answer makes maintlink retry anyway. Nothing is queued;
* 413 for a body over ``max_body`` bytes (1 MiB), refused before it is read in full;
* 503 when the queue cannot be written (disk full, file locked): maintlink retries later.

``GET /healthz`` answers ``{"status": "ok", "pending": n}``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from maintlink.receiver.queue import Delivery, EventQueue, iterate
from maintlink.receiver.verify import (
    DEFAULT_TOLERANCE,
    InvalidPayloadError,
    InvalidSecretError,
    InvalidSignatureError,
    InvalidTimestampError,
    MissingHeaderError,
    TimestampTooNewError,
    TimestampTooOldError,
    WebhookVerificationError,
    verify,
)
from maintlink.webhooks.signing import decode_secret

__all__ = ["MAX_BODY", "Delivery", "create_receiver_app", "iterate"]

MAX_BODY = 1024 * 1024

log = logging.getLogger("maintlink.receiver")

_CODES: tuple[tuple[type[WebhookVerificationError], str], ...] = (
    (MissingHeaderError, "WEBHOOK_MISSING_HEADER"),
    (InvalidTimestampError, "WEBHOOK_INVALID_TIMESTAMP"),
    (TimestampTooOldError, "WEBHOOK_TIMESTAMP_TOO_OLD"),
    (TimestampTooNewError, "WEBHOOK_TIMESTAMP_TOO_NEW"),
    (InvalidSignatureError, "WEBHOOK_INVALID_SIGNATURE"),
    (InvalidPayloadError, "WEBHOOK_INVALID_PAYLOAD"),
)

# Kept with the event: enough to verify it again later, nothing the sender did not sign for.
_KEPT_HEADERS = (
    "webhook-id", "webhook-timestamp", "webhook-signature",
    "svix-id", "svix-timestamp", "svix-signature", "content-type", "user-agent",
)

# The two success answers, serialised once.
_RECEIVED = {
    dup: orjson.dumps({"received": True, "duplicate": dup}) for dup in (False, True)
}


def create_receiver_app(
    secrets: Sequence[str],
    queue: EventQueue,
    *,
    path: str = "/webhooks",
    tolerance: int = DEFAULT_TOLERANCE,
    max_body: int = MAX_BODY,
) -> Starlette:
    """An ASGI app that verifies maintlink webhooks with ``secrets`` and appends them to
    ``queue``. Pass every live secret during a rotation; a request signed with any is accepted.

    Raises ``InvalidSecretError`` (a ``ValueError``) at once for a malformed secret, so a typo
    is found at start-up rather than as a 400 on every delivery.
    """
    secrets = [secrets] if isinstance(secrets, str) else list(secrets)
    if not secrets:
        raise InvalidSecretError("at least one webhook secret is needed")
    for secret in secrets:
        try:
            decode_secret(secret)
        except ValueError as exc:
            raise InvalidSecretError(str(exc)) from None
    if not path.startswith("/"):
        raise ValueError("path must start with '/'")

    async def receive(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > max_body:
            return _too_large(max_body)  # refused before reading a byte of it
        body = bytearray()
        async for chunk in request.stream():  # chunked bodies are counted as they arrive
            body += chunk
            if len(body) > max_body:
                return _too_large(max_body)
        raw = bytes(body)

        try:
            payload = verify(raw, request.headers, secrets, tolerance)
        except WebhookVerificationError as exc:
            code = next((c for kind, c in _CODES if isinstance(exc, kind)), "WEBHOOK_INVALID")
            log.warning("refused a webhook from %s: %s", _client(request), exc)
            return _error(400, code, str(exc))

        webhook_id = (request.headers.get("webhook-id") or request.headers["svix-id"]).strip()
        kept = {name: request.headers[name] for name in _KEPT_HEADERS if name in request.headers}
        try:
            # A thread: the commit waits for an fsync, which must not stall the event loop.
            added = await asyncio.to_thread(queue.append, webhook_id, raw, kept, payload=payload)
        except (sqlite3.Error, OSError) as exc:
            log.error("could not queue webhook %s: %s", webhook_id, exc)
            return _error(503, "QUEUE_UNAVAILABLE", "the event could not be stored; retry later")
        return Response(_RECEIVED[not added], media_type="application/json")

    async def healthz(request: Request) -> Response:
        stats = await asyncio.to_thread(queue.stats)
        return Response(orjson.dumps({"status": "ok", "pending": stats["pending"]}),
                        media_type="application/json")

    return Starlette(routes=[
        Route(path, receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])


def _error(status: int, code: str, message: str) -> Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _too_large(max_body: int) -> Response:
    return _error(413, "PAYLOAD_TOO_LARGE", f"the body must be at most {max_body} bytes")


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"
