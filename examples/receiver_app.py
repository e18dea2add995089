"""Receive maintlink webhooks and act on them, in one process.

    MAINTLINK_WEBHOOK_SECRET=whsec_... python examples/receiver_app.py

then point a webhook endpoint at http://<this host>:9000/webhooks (behind your HTTPS proxy).

Two halves share a durable queue file:

* the endpoint verifies each request, appends it to the queue and answers 200 at once;
* the consumer loop takes events out in order (per connection, by ``sequence``), handles them,
  and acknowledges each one only after it was handled.

A ``connection.reauthorization_required`` event prints the message to send to the customer.
With ``MAINTLINK_API_URL`` and ``MAINTLINK_API_KEY`` set, the message carries a ready-made
reconnect link (a link token in reconnect mode); without them it names the API call to make.

Environment: MAINTLINK_WEBHOOK_SECRET (comma-separated during a secret rotation),
MAINTLINK_API_URL, MAINTLINK_API_KEY, RECONNECT_REDIRECT_URI, RECEIVER_HOST (127.0.0.1),
RECEIVER_PORT (9000), RECEIVER_QUEUE (webhook-events.sqlite3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import httpx
import uvicorn

from maintlink.receiver import EventQueue, create_receiver_app, iterate

log = logging.getLogger("receiver_app")

MESSAGE = """\
To: the administrators of customer {customer_id}
Subject: Action needed: reconnect {system} to Acme Maintenance Insights

Hello,

Acme Maintenance Insights can no longer read data from {system}: {reason}.
Syncing is paused until the connection is renewed. Nothing is lost: your data, settings and
history are kept, and syncing resumes where it stopped.

To reconnect (about a minute), open this link and sign in to {system} again, or enter a new
API key if yours was rotated:

    {link}

The link is personal and expires; ask us for a new one if it has.

Thank you,
The Acme team"""


async def reconnect_link(event: dict[str, Any]) -> str:
    """A link token in reconnect mode for this connection, or the call that makes one."""
    api_url = os.environ.get("MAINTLINK_API_URL")
    api_key = os.environ.get("MAINTLINK_API_KEY")
    if not (api_url and api_key):
        return (f"<create one: POST /api/v1/link-tokens with customer_id={event['customer_id']}, "
                f"connection_id={event['connection_id']}, and send its url>")
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as api:
        response = await api.post(
            "/api/v1/link-tokens",
            headers={"Authorization": f"Bearer {api_key}", "Maintlink-Version": "v1"},
            json={
                "customer_id": event["customer_id"],
                "connection_id": event["connection_id"],  # reconnect mode: same connection
                "redirect_uri": os.environ.get(
                    "RECONNECT_REDIRECT_URI", "https://app.example.com/settings/integrations"),
            },
        )
        response.raise_for_status()  # a failure leaves the event queued: tried again later
        return str(response.json()["url"])


async def handle(event: dict[str, Any]) -> None:
    """Your application's logic, one event at a time. Must be safe to run twice for one event
    (at-least-once): here, printing twice is harmless."""
    kind, data = event["type"], event.get("data") or {}
    where = f"connection {event.get('connection_id')} (customer {event.get('customer_id')})"
    if kind == "connection.reauthorization_required":
        reason = data.get("reason") or "the credentials were rejected"
        message = MESSAGE.format(
            customer_id=event.get("customer_id"),
            system=data.get("integration") or "your maintenance system",
            reason=reason,
            link=await reconnect_link(event),
        )
        print(f"\n--- send this to the customer ({where}) ---\n{message}\n---\n", flush=True)
    elif kind == "connection.reauthorized":
        print(f"{where} is reconnected: close the reminder you opened for it.", flush=True)
    elif kind == "connection.status_changed":
        print(f"{where} is now {data.get('status')} ({data.get('reason') or 'no reason'}).")
    elif kind == "sync.completed":
        counts = {name: sum(c.values()) for name, c in (data.get("entities") or {}).items()}
        print(f"sync finished for {where}: {counts}")
    elif kind == "sync.failed":
        print(f"sync failed for {where}: {data.get('error_code')} {data.get('error_message')}")
    else:
        print(f"{kind} for {where}")


async def consume(queue: EventQueue) -> None:
    """Take events out in order; acknowledge each after it was handled."""
    async with contextlib.aclosing(iterate(queue, auto_ack=False)) as deliveries:
        async for delivery in deliveries:
            event = delivery.event
            if not delivery.queued.in_order:
                # An earlier event of this connection is missing or came late: do not trust
                # local state built from deltas; re-read the connection's status if it matters.
                log.info("event %s (sequence %s) is out of order", event["id"], event["sequence"])
            try:
                await handle(event)
            except Exception:
                log.exception("handling %s failed; trying again in 60 s", event["id"])
                await delivery.nack(delay=60)  # its connection's later events wait behind it
            else:
                await delivery.ack()


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    secrets = [s.strip() for s in os.environ.get("MAINTLINK_WEBHOOK_SECRET", "").split(",")
               if s.strip()]
    if not secrets:
        raise SystemExit("Set MAINTLINK_WEBHOOK_SECRET to the endpoint's whsec_... secret.")
    host = os.environ.get("RECEIVER_HOST", "127.0.0.1")
    port = int(os.environ.get("RECEIVER_PORT", "9000"))

    with EventQueue(os.environ.get("RECEIVER_QUEUE", "webhook-events.sqlite3")) as queue:
        app = create_receiver_app(secrets, queue)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
        consumer = asyncio.create_task(consume(queue))
        print(f"Receiving at http://{host}:{port}/webhooks; {queue.stats()['pending']} pending.")
        try:
            await server.serve()  # until Ctrl-C
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer


if __name__ == "__main__":
    asyncio.run(main())
