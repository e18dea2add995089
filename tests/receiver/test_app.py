"""The ready-made receiver over real HTTP, signed by the official `standardwebhooks` library."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from typer.testing import CliRunner

from maintlink.receiver import EventQueue, InvalidSecretError, create_receiver_app, iterate
from maintlink.receiver.cli import app as cli_app
from maintlink.receiver.cli import parse_secrets
from maintlink.webhooks.signing import generate_secret
from tests.conftest import free_port, serve_app

SECRET = generate_secret()
NEW_SECRET = generate_secret()


def event_body(event_id: str, seq: int | None = 1, conn: str | None = "conn_1",
               type_: str = "sync.completed", **data: Any) -> bytes:
    return json.dumps({
        "id": event_id, "type": type_, "timestamp": "2025-01-01T00:00:00Z", "api_version": "v1",
        "connection_id": conn, "customer_id": "cust_1", "sequence": seq, "data": data,
    }).encode()


def signed(body: bytes, event_id: str, *secrets: str, at: float | None = None) -> dict[str, str]:
    """Headers as a Standard Webhooks sender makes them, one signature per secret."""
    moment = datetime.fromtimestamp(int(time.time() if at is None else at), tz=UTC)
    signatures = [Webhook(s).sign(event_id, moment, body.decode()) for s in secrets or (SECRET,)]
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
    }


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[EventQueue]:
    with EventQueue(tmp_path / "events.sqlite3", gap_timeout=0.3) as q:
        yield q


@pytest.fixture
async def client(queue: EventQueue) -> AsyncIterator[httpx.AsyncClient]:
    app = create_receiver_app([SECRET, NEW_SECRET], queue)
    async with serve_app(app) as base, httpx.AsyncClient(base_url=base) as http:
        yield http


async def deliver(client: httpx.AsyncClient, event_id: str, seq: int | None = 1,
                  **kwargs: Any) -> httpx.Response:
    body = event_body(event_id, seq)
    return await client.post("/webhooks", content=body, headers=signed(body, event_id, **kwargs))


async def test_a_valid_delivery_is_queued_and_acknowledged(
    client: httpx.AsyncClient, queue: EventQueue
) -> None:
    body = event_body("evt_1", 1, reason="x" * 10)
    response = await client.post("/webhooks", content=body, headers=signed(body, "evt_1"))
    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False}
    event = queue.next()
    assert event is not None and event.id == "evt_1" and event.body == body
    assert set(event.headers) >= {"webhook-id", "webhook-timestamp", "webhook-signature"}


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda h: h | {"webhook-signature": signed(b"other", "evt_1")["webhook-signature"]},
         "WEBHOOK_INVALID_SIGNATURE"),
        (lambda h: signed(event_body("evt_1"), "evt_1", generate_secret()),
         "WEBHOOK_INVALID_SIGNATURE"),
        (lambda h: signed(event_body("evt_1"), "evt_1", at=time.time() - 301),
         "WEBHOOK_TIMESTAMP_TOO_OLD"),
        (lambda h: signed(event_body("evt_1"), "evt_1", at=time.time() + 400),
         "WEBHOOK_TIMESTAMP_TOO_NEW"),
        (lambda h: {k: v for k, v in h.items() if k != "webhook-id"}, "WEBHOOK_MISSING_HEADER"),
        (lambda h: {k: v for k, v in h.items() if k != "webhook-timestamp"},
         "WEBHOOK_MISSING_HEADER"),
        (lambda h: {k: v for k, v in h.items() if k != "webhook-signature"},
         "WEBHOOK_MISSING_HEADER"),
        (lambda h: h | {"webhook-id": "evt_2"}, "WEBHOOK_INVALID_SIGNATURE"),  # id is signed
    ],
    ids=["tampered", "wrong-secret", "stale", "future", "no-id", "no-timestamp",
         "no-signature", "swapped-id"],
)
async def test_refused_requests_are_400_and_never_queued(
    client: httpx.AsyncClient, queue: EventQueue, mutate: Any, code: str
) -> None:
    body = event_body("evt_1")
    response = await client.post("/webhooks", content=body, headers=mutate(signed(body, "evt_1")))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert queue.stats()["received"] == 0


async def test_duplicates_are_acknowledged_but_stored_once(
    client: httpx.AsyncClient, queue: EventQueue
) -> None:
    first = await deliver(client, "evt_1")
    retry = await deliver(client, "evt_1")  # a retry: same id, new timestamp and signature
    assert first.json() == {"received": True, "duplicate": False}
    assert retry.status_code == 200
    assert retry.json() == {"received": True, "duplicate": True}
    stats = queue.stats()
    assert (stats["pending"], stats["received"], stats["duplicates"]) == (1, 1, 1)


async def test_out_of_order_deliveries_are_consumed_in_sequence(
    client: httpx.AsyncClient, queue: EventQueue
) -> None:
    for event_id, seq in (("evt_3", 3), ("evt_1", 1), ("evt_2", 2)):
        assert (await deliver(client, event_id, seq)).status_code == 200
    order = []
    while (event := queue.next()) is not None:
        order.append(event.sequence)
        queue.ack(event.id)
    assert order == [1, 2, 3]


async def test_a_gap_is_released_after_the_gap_timeout(
    client: httpx.AsyncClient, queue: EventQueue
) -> None:
    await deliver(client, "evt_1", 1)
    assert queue.ack(queue.next().id)  # type: ignore[union-attr]
    await deliver(client, "evt_3", 3)
    assert queue.next() is None
    await asyncio.sleep(0.35)
    event = queue.next()
    assert event is not None and event.sequence == 3 and not event.in_order


async def test_both_secrets_are_accepted_during_a_rotation(
    client: httpx.AsyncClient, queue: EventQueue
) -> None:
    assert (await deliver(client, "evt_old", None)).status_code == 200  # signed with SECRET
    for event_id, secrets in (
        ("evt_new", (NEW_SECRET,)),
        ("evt_both", (generate_secret(), NEW_SECRET)),  # several signatures in one header
    ):
        body = event_body(event_id)
        response = await client.post("/webhooks", content=body,
                                     headers=signed(body, event_id, *secrets))
        assert response.status_code == 200, response.text
    assert queue.stats()["received"] == 3


async def test_bodies_over_one_mebibyte_are_refused(
    client: httpx.AsyncClient, queue: EventQueue
) -> None:
    big = event_body("evt_big", padding="x" * (1024 * 1024))
    response = await client.post("/webhooks", content=big, headers=signed(big, "evt_big"))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(20):
            yield b"x" * 65536

    response = await client.post("/webhooks", content=chunks(), headers=signed(big, "evt_big"))
    assert response.status_code == 413
    assert queue.stats()["received"] == 0


async def test_only_post_and_a_health_check(client: httpx.AsyncClient) -> None:
    assert (await client.get("/webhooks")).status_code == 405
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok", "pending": 0}
    assert (await client.post("/elsewhere")).status_code == 404


def test_a_malformed_secret_is_refused_at_start_up(queue: EventQueue) -> None:
    with pytest.raises(InvalidSecretError):
        create_receiver_app(["whsec_not base64!"], queue)
    with pytest.raises(InvalidSecretError):
        create_receiver_app([], queue)


async def test_iterate_receives_what_the_endpoint_queued(
    client: httpx.AsyncClient, queue: EventQueue
) -> None:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def consumer() -> None:
        async with contextlib.aclosing(iterate(queue, poll_interval=10)) as deliveries:
            async for delivery in deliveries:
                await received.put(delivery.event)

    task = asyncio.create_task(consumer())
    try:
        await deliver(client, "evt_1", 1)
        event = await asyncio.wait_for(received.get(), 3)  # woken by the append, not polled
        assert event["id"] == "evt_1"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- the command line ---------------------------------------------------------------------


def test_secrets_from_options_or_environment() -> None:
    assert parse_secrets(["a", "b,c"], "z") == ["a", "b", "c"]
    assert parse_secrets(None, " a , b ") == ["a", "b"]
    assert parse_secrets([], None) == []


def test_consume_prints_json_lines_in_order_and_acknowledges(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    with EventQueue(path) as q:
        for event_id, seq in (("evt_2", 2), ("evt_1", 1), ("acc", None)):
            q.append(event_id, event_body(event_id, seq, None if seq is None else "conn_1"))
    runner = CliRunner()
    peek = runner.invoke(cli_app, ["consume", "--queue", str(path), "--no-ack"])
    assert peek.exit_code == 0, peek.output
    assert [json.loads(line)["id"] for line in peek.stdout.splitlines()] == [
        "evt_1", "evt_2", "acc"]
    taken = runner.invoke(cli_app, ["consume", "--queue", str(path)])
    assert taken.exit_code == 0, taken.output
    assert sorted(json.loads(line)["id"] for line in taken.stdout.splitlines()) == [
        "acc", "evt_1", "evt_2"]
    with EventQueue(path) as q:
        assert q.stats()["pending"] == 0 and q.stats()["acked"] == 3
    missing = runner.invoke(cli_app, ["consume", "--queue", str(tmp_path / "nope.sqlite3")])
    assert missing.exit_code == 1


def test_receive_command_end_to_end(tmp_path: Path) -> None:
    """`receive` in its own process, then `consume` in another: the way a user runs them."""
    path = tmp_path / "events.sqlite3"
    port = free_port()
    env = os.environ | {"MAINTLINK_RECEIVER_SECRET": f"{NEW_SECRET},{SECRET}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "maintlink.receiver.cli", "receive", "--queue", str(path),
         "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.05)
        body = event_body("evt_1", 1, type_="connection.reauthorization_required")
        response = httpx.post(f"{base}/webhooks", content=body, headers=signed(body, "evt_1"))
        assert response.json() == {"received": True, "duplicate": False}
    finally:
        server.terminate()
        output = server.communicate(timeout=10)[0]
    assert f"http://127.0.0.1:{port}/webhooks" in output
    result = CliRunner().invoke(cli_app, ["consume", "--queue", str(path)])
    assert json.loads(result.stdout)["type"] == "connection.reauthorization_required"


def test_receive_refuses_a_malformed_secret_before_creating_anything(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    result = CliRunner().invoke(cli_app, ["receive", "--secret", "whsec_not base64!",
                                          "--queue", str(path)])
    assert result.exit_code == 2
    assert not path.exists()
    result = CliRunner().invoke(cli_app, ["receive", "--queue", str(path)],
                                env={"MAINTLINK_RECEIVER_SECRET": ""})
    assert result.exit_code == 2 and "No webhook secret" in result.output
