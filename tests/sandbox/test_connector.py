"""SandboxConnector against a real sandbox over HTTP: failure kinds, paging, mapping, writes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import uvicorn

from maintlink.connectors.base import ConnectorError, FailureKind
from maintlink.connectors.http import error_message, parse_retry_after
from maintlink.connectors.sandbox import SandboxConnector
from maintlink.sandbox.server import RunningSandbox


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # Plain-HTTP tests: skipping the CA bundle makes a client ~100x cheaper to build.
    async with httpx.AsyncClient(verify=False) as c:
        yield c


def connector(
    client: httpx.AsyncClient, base_url: str, api_key: Any, **settings: Any
) -> SandboxConnector:
    return SandboxConnector({"base_url": base_url, "api_key": api_key}, client, settings)


async def collect(conn: SandboxConnector, entity: str, **kwargs: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    async for page in conn.list_records(entity, **kwargs):
        records.extend(page.records)
    return records


def control(sandbox: RunningSandbox, path: str, body: dict[str, Any] | None = None) -> Any:
    response = httpx.post(f"{sandbox.base_url}{path}", json=body or {}, timeout=5, verify=False)
    response.raise_for_status()
    return response.json()


def test_declares_its_contract() -> None:
    assert SandboxConnector.slug == "sandbox"
    assert SandboxConnector.name == "Sandbox CMMS"
    assert SandboxConnector.auth_type == "api_key"
    fields = {f.name: f for f in SandboxConnector.credential_fields}
    assert fields["base_url"].type == "url" and fields["base_url"].label == "Instance URL"
    assert fields["api_key"].type == "password" and fields["api_key"].secret
    assert set(SandboxConnector.writable_entities) == {"work_orders", "purchase_orders"}


async def test_validate(sandbox: RunningSandbox, client: httpx.AsyncClient) -> None:
    info = await connector(client, sandbox.base_url, sandbox.api_key).validate()
    assert info.remote_account_id == "org_7"
    assert info.remote_account_name == "Sandbox Manufacturing Co."
    # The API root is accepted as the instance URL too.
    info = await connector(client, f"{sandbox.base_url}/api/v1/", sandbox.api_key).validate()
    assert info.remote_account_id == "org_7"
    await connector(client, sandbox.base_url, sandbox.api_key).check_health()


async def expect(kind: FailureKind, call: Any) -> ConnectorError:
    with pytest.raises(ConnectorError) as caught:
        await call
    assert caught.value.kind == kind, caught.value.message
    return caught.value


async def test_auth_failures(sandbox: RunningSandbox, client: httpx.AsyncClient) -> None:
    error = await expect(FailureKind.AUTH, connector(client, sandbox.base_url, "wrong").validate())
    assert error.message == "Invalid API key" and error.status_code == 401

    key = control(sandbox, "/_sandbox/credentials")["api_key"]
    control(sandbox, f"/_sandbox/credentials/{key}/revoke")
    conn = connector(client, sandbox.base_url, key)
    error = await expect(FailureKind.AUTH, conn.validate())
    assert error.message == "API key has been revoked"
    await expect(FailureKind.AUTH, conn.check_health())
    await expect(FailureKind.AUTH, collect(conn, "work_orders"))


@pytest.mark.parametrize("mode", ["503", "refuse"])
async def test_offline_is_unavailable(
    sandbox: RunningSandbox, client: httpx.AsyncClient, mode: str
) -> None:
    control(sandbox, "/_sandbox/faults", {"offline": True, "offline_mode": mode})
    conn = connector(client, sandbox.base_url, sandbox.api_key)
    error = await expect(FailureKind.UNAVAILABLE, conn.validate())
    assert error.status_code == (503 if mode == "503" else None)
    await expect(FailureKind.UNAVAILABLE, collect(conn, "assets"))


async def test_connection_refused_and_timeout(
    sandbox: RunningSandbox, client: httpx.AsyncClient
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    refused = connector(client, f"http://127.0.0.1:{closed_port}", "k")
    await expect(FailureKind.UNAVAILABLE, refused.validate())

    control(sandbox, "/_sandbox/faults", {"latency_ms": 1000})
    slow = connector(client, sandbox.base_url, sandbox.api_key, timeout=0.1)
    error = await expect(FailureKind.UNAVAILABLE, slow.check_health())
    assert "in time" in error.message


async def test_rate_limited(sandbox: RunningSandbox, client: httpx.AsyncClient) -> None:
    key = control(sandbox, "/_sandbox/credentials")["api_key"]
    control(sandbox, f"/_sandbox/credentials/{key}/faults", {"rate_limit_per_minute": 1})
    conn = connector(client, sandbox.base_url, key)
    await conn.check_health()
    error = await expect(FailureKind.RATE_LIMITED, conn.check_health())
    assert error.status_code == 429
    assert error.retry_after is not None and 0 < error.retry_after <= 60


async def test_permission_denied(sandbox: RunningSandbox, client: httpx.AsyncClient) -> None:
    key = control(sandbox, "/_sandbox/credentials", {"entities": ["work_orders"]})["api_key"]
    conn = connector(client, sandbox.base_url, key)
    await conn.validate()
    assert await collect(conn, "work_orders")
    error = await expect(FailureKind.PERMISSION_DENIED, collect(conn, "assets"))
    assert error.status_code == 403 and "assets" in error.message


@pytest.mark.parametrize(
    "base_url",
    [
        "",
        None,
        "not a url",
        "ftp://example.com",
        "http://",
        "http://exa mple.com",
        "//host/x",
        "http://host/?q=1",
    ],
)
async def test_malformed_base_url(client: httpx.AsyncClient, base_url: Any) -> None:
    await expect(FailureKind.INVALID_CONFIGURATION, connector(client, base_url, "key").validate())


async def test_missing_key_and_wrong_url(
    sandbox: RunningSandbox, client: httpx.AsyncClient
) -> None:
    await expect(
        FailureKind.INVALID_CONFIGURATION, connector(client, sandbox.base_url, "").validate()
    )
    # A reachable server that is not a sandbox API at this path.
    error = await expect(
        FailureKind.INVALID_CONFIGURATION,
        connector(client, f"{sandbox.base_url}/elsewhere", sandbox.api_key).validate(),
    )
    assert error.status_code == 404


async def test_provider_errors(sandbox: RunningSandbox, client: httpx.AsyncClient) -> None:
    conn = connector(client, sandbox.base_url, sandbox.api_key)
    error = await expect(
        FailureKind.PROVIDER_ERROR, conn.update("work_orders", "999", {"notes": "x"})
    )
    assert error.status_code == 404
    error = await expect(
        FailureKind.PROVIDER_ERROR, conn.create("work_orders", {"title": "x", "asset_ids": ["1"]})
    )
    assert error.status_code == 400 and "assetId" in error.message


@contextlib.asynccontextmanager
async def liar(answers: dict[str, tuple[int, bytes]]) -> AsyncIterator[str]:
    """A server that answers fixed bodies by path: a provider that lies."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        status, body = answers.get(scope["path"], (404, b"{}"))
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_lying_provider(client: httpx.AsyncClient) -> None:
    stuck = b'{"data": [{"id": "1"}], "next_cursor": "same"}'
    answers = {
        "/api/v1/me": (200, b"<html>hello</html>"),
        "/api/v1/assets": (200, b'{"items": []}'),
        "/api/v1/parts": (200, stuck),
        "/api/v1/users": (502, b"<html>Bad gateway</html>"),
    }
    async with liar(answers) as url:
        conn = connector(client, url, "key")
        # On the credential check a web page instead of the API means a wrong URL.
        await expect(FailureKind.INVALID_CONFIGURATION, conn.validate())
        await expect(FailureKind.PROVIDER_ERROR, conn.check_health())
        await expect(FailureKind.PROVIDER_ERROR, collect(conn, "assets"))
        await expect(FailureKind.PROVIDER_ERROR, collect(conn, "parts", cursor="same"))
        error = await expect(FailureKind.UNAVAILABLE, collect(conn, "users"))
        assert error.status_code == 502


async def test_list_records_pages_everything(
    sandbox: RunningSandbox, client: httpx.AsyncClient
) -> None:
    conn = connector(client, sandbox.base_url, sandbox.api_key, page_size=7)
    pages = [page async for page in conn.list_records("work_orders")]
    assert len(pages) == 9  # 60 records, 7 a page
    assert all(p.next_cursor for p in pages[:-1]) and pages[-1].next_cursor is None
    ids = [r["id"] for p in pages for r in p.records]
    assert len(ids) == len(set(ids)) == 60

    # Resuming from a cursor yields exactly the rest.
    rest = await collect(conn, "work_orders", cursor=pages[3].next_cursor)
    assert [r["id"] for r in rest] == ids[28:]


async def test_incremental_sync_sees_changes_and_deletions(
    sandbox: RunningSandbox, client: httpx.AsyncClient
) -> None:
    conn = connector(client, sandbox.base_url, sandbox.api_key, page_size=3)
    initial = await collect(conn, "assets")
    checkpoint = max(conn.map_record("assets", r)["updated_at"] for r in initial)
    summary = control(
        sandbox, "/_sandbox/changes", {"entity": "assets", "update": 2, "delete": 1, "create": 1}
    )
    changed = await collect(conn, "assets", modified_since=checkpoint)
    mapped = {m["remote_id"]: m for m in (conn.map_record("assets", r) for r in changed)}
    for kind in ("created", "updated", "deleted"):
        assert set(summary[kind]["assets"]) <= set(mapped)
    (deleted_id,) = summary["deleted"]["assets"]
    assert mapped[deleted_id]["remote_deleted_at"] is not None
    assert all(m["updated_at"] >= checkpoint for m in mapped.values())
    assert mapped[summary["created"]["assets"][0]]["remote_deleted_at"] is None


async def test_map_every_entity(sandbox: RunningSandbox, client: httpx.AsyncClient) -> None:
    conn = connector(client, sandbox.base_url, sandbox.api_key)
    for entity in SandboxConnector.entities:
        raws = await collect(conn, entity)
        for raw in raws:
            mapped = conn.map_record(entity, raw)
            assert mapped["remote_id"] == raw["id"]
            assert isinstance(mapped["created_at"], datetime)
            assert mapped["created_at"].tzinfo is not None
            assert mapped["updated_at"] >= mapped["created_at"]
            assert mapped["remote_deleted_at"] is None

    wos = await collect(conn, "work_orders")
    statuses = {raw["status"]: conn.map_record("work_orders", raw)["status"] for raw in wos}
    expected = {
        "OPEN": "OPEN",
        "IN_PROGRESS": "IN_PROGRESS",
        "ON_HOLD": "ON_HOLD",
        "DONE": "COMPLETED",
        "CANCELED": "CANCELLED",
    }
    assert statuses == {k: v for k, v in expected.items() if k in statuses}
    assert "DONE" in statuses
    raw = next(r for r in wos if r["assetId"])
    mapped = conn.map_record("work_orders", raw)
    assert mapped["asset_ids"] == [raw["assetId"]]
    assert mapped["remote_number"] == str(raw["sequentialId"])
    assert mapped["type"] in ("CORRECTIVE", "PREVENTIVE", "INSPECTION", "OTHER")
    assert mapped["custom_fields"] == raw["customFields"]

    part = conn.map_record("parts", (await collect(conn, "parts"))[0])
    assert isinstance(part["unit_cost"], Decimal) and part["stock_location_id"]
    po_raw = (await collect(conn, "purchase_orders"))[0]
    po = conn.map_record("purchase_orders", po_raw)
    assert po["total_amount"] == Decimal(str(po_raw["totalCost"]))
    assert len(po["lines"]) == len(po_raw["items"]) and po["lines"][0]["qty_ordered"] >= 1
    user = conn.map_record("users", (await collect(conn, "users"))[0])
    assert user["display_name"] == f"{user['first_name']} {user['last_name']}"


async def test_writes(sandbox: RunningSandbox, client: httpx.AsyncClient) -> None:
    conn = connector(client, sandbox.base_url, sandbox.api_key)
    asset = (await collect(conn, "assets"))[0]
    due = datetime(2031, 5, 6, 7, 8, tzinfo=UTC)
    raw = await conn.create(
        "work_orders",
        {
            "title": "Check guard",
            "priority": "CRITICAL",
            "type": "INSPECTION",
            "asset_ids": [asset["id"]],
            "due_at": due,
        },
    )
    created = conn.map_record("work_orders", raw)
    assert created["title"] == "Check guard" and created["status"] == "OPEN"
    assert created["priority"] == "HIGH" and created["type"] == "INSPECTION"
    assert created["due_at"] == due and created["asset_ids"] == [asset["id"]]

    raw = await conn.update(
        "work_orders", created["remote_id"], {"status": "COMPLETED", "notes": "ok"}
    )
    updated = conn.map_record("work_orders", raw)
    assert updated["status"] == "COMPLETED" and updated["remote_status"] == "DONE"
    assert updated["completed_at"] is not None

    vendor = (await collect(conn, "vendors"))[0]
    raw = await conn.create(
        "purchase_orders",
        {
            "vendor_id": vendor["id"],
            "status": "PENDING_APPROVAL",
            "due_at": due + timedelta(days=3),
            "lines": [{"description": "Gloves", "qty_ordered": 4, "unit_price": Decimal("2.5")}],
        },
    )
    po = conn.map_record("purchase_orders", raw)
    assert po["status"] == "PENDING_APPROVAL" and po["total_amount"] == Decimal("10.0")

    with pytest.raises(ValueError, match="colour"):
        await conn.create("work_orders", {"title": "x", "colour": "red"})
    with pytest.raises(ValueError):
        await conn.create("assets", {"name": "x"})
    with pytest.raises(ValueError):
        await conn.update("work_orders", "1", {"status": "SOMEWHERE"})


def test_retry_after_parsing() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("30") == 30
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 01 Jan 2025 00:00:10 GMT", now=now) == 10
    assert parse_retry_after("Tue, 31 Dec 2024 00:00:00 GMT", now=now) == 0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": {"code": "x", "message": "Nope"}}', "Nope"),
        (b'{"error": {"code": "x", "message": {"lang": "en", "value": "OData"}}}', "OData"),
        (b'{"Error": {"message": "Maximo"}}', "Maximo"),
        (b'{"error": "plain"}', "plain"),
        (b'{"message": "top"}', "top"),
        (b"<html>boom</html>", "HTTP 500 Internal Server Error"),
        (b"short text", "short text"),
    ],
)
def test_error_message_shapes(body: bytes, expected: str) -> None:
    response = httpx.Response(500, content=body)
    assert error_message(response) == expected
