"""The receiving side of maintlink webhooks, for our users' applications.

Kept light on purpose: importing ``maintlink.receiver`` loads only the verifier, which needs
nothing beyond the standard library, so a receiver that only verifies pays for nothing else.
The queue (sqlite3) and the ready-made endpoint (Starlette) load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from maintlink.receiver.verify import (
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

if TYPE_CHECKING:
    from maintlink.receiver.app import create_receiver_app
    from maintlink.receiver.queue import Delivery, EventQueue, QueuedEvent, iterate

_LAZY = {
    "Delivery": "maintlink.receiver.queue",
    "EventQueue": "maintlink.receiver.queue",
    "QueuedEvent": "maintlink.receiver.queue",
    "iterate": "maintlink.receiver.queue",
    "create_receiver_app": "maintlink.receiver.app",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Delivery",
    "EventQueue",
    "InvalidPayloadError",
    "InvalidSecretError",
    "InvalidSignatureError",
    "InvalidTimestampError",
    "MissingHeaderError",
    "QueuedEvent",
    "TimestampTooNewError",
    "TimestampTooOldError",
    "WebhookVerificationError",
    "create_receiver_app",
    "iterate",
    "verify",
]
