from __future__ import annotations

import httpx
import pytest

from maintlink.config import Settings
from maintlink.domain.connections import Status, transition
from maintlink.store.db import create_engine
from tests.conftest import bearer, create_connection, new_sandbox_key


async def test_create_connection_returns_token_once(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    conn = await create_connection(client, admin_key, sandbox_url)
    assert conn["object"] == "connection"
    assert conn["id"].startswith("conn_")
    assert conn["token"].startswith("mlc_")
    assert conn["status"] == "active"
    assert conn["customer_id"] == "cust-1"
    assert conn["token_hint"].endswith(conn["token"][-4:])
    assert "credentials" not in conn
    r = await client.get(f"/api/v1/connections/{conn['id']}", headers=bearer(admin_key))
    assert r.status_code == 200
    assert "token" not in r.json()
    assert r.json()["id"] == conn["id"]


async def test_rejected_credentials_are_400_with_the_systems_reason(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    r = await client.post(
        "/api/v1/connections", headers=bearer(admin_key),
        json={"customer_id": "c", "integration": "sandbox",
              "credentials": {"base_url": sandbox_url, "api_key": "sbx_wrong"}},
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "INVALID_CREDENTIALS"
    assert "invalid" in err["message"].lower()
    r = await client.get("/api/v1/connections", headers=bearer(admin_key))
    assert r.json()["data"] == []


async def test_missing_credential_field_is_invalid_credentials(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    r = await client.post(
        "/api/v1/connections", headers=bearer(admin_key),
        json={"customer_id": "c", "integration": "sandbox",
              "credentials": {"base_url": sandbox_url}},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "INVALID_CREDENTIALS"
    assert r.json()["error"]["details"]["fields"][0]["field"] == "api_key"


async def test_unreachable_system_is_502(client: httpx.AsyncClient, admin_key: str) -> None:
    from tests.conftest import free_port

    r = await client.post(
        "/api/v1/connections", headers=bearer(admin_key),
        json={"customer_id": "c", "integration": "sandbox",
              "credentials": {"base_url": f"http://127.0.0.1:{free_port()}", "api_key": "k"}},
    )
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "PROVIDER_UNAVAILABLE"


async def test_unknown_integration(client: httpx.AsyncClient, admin_key: str) -> None:
    r = await client.post(
        "/api/v1/connections", headers=bearer(admin_key),
        json={"customer_id": "c", "integration": "nope", "credentials": {}},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "INTEGRATION_NOT_FOUND"


async def test_status_with_admin_key_and_with_token(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    conn = await create_connection(client, admin_key, sandbox_url)
    for token in (admin_key, conn["token"]):
        r = await client.get(f"/api/v1/connections/{conn['id']}/status", headers=bearer(token))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["connection_id"] == conn["id"]
        assert body["status"] == "active"
        assert body["online"] is True
        assert body["reauth_required"] is False
        assert body["last_error"] is None
        assert body["reconnect"] is None
        assert body["status_changed_at"]
    r = await client.get("/api/v1/connection", headers=bearer(conn["token"]))
    assert r.status_code == 200
    assert r.json()["id"] == conn["id"]


async def test_a_token_cannot_read_another_connections_status(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    a = await create_connection(client, admin_key, sandbox_url, "a")
    b = await create_connection(client, admin_key, sandbox_url, "b")
    r = await client.get(f"/api/v1/connections/{b['id']}/status", headers=bearer(a["token"]))
    assert r.status_code == 404


async def test_token_kinds_are_not_interchangeable(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    conn = await create_connection(client, admin_key, sandbox_url)
    r = await client.get("/api/v1/connections", headers=bearer(conn["token"]))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "FORBIDDEN"
    r = await client.get("/api/v1/connection", headers=bearer(admin_key))
    assert r.status_code == 403


async def test_rotate_token_voids_the_old_one(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    conn = await create_connection(client, admin_key, sandbox_url)
    r = await client.post(f"/api/v1/connections/{conn['id']}/token", headers=bearer(admin_key))
    assert r.status_code == 200
    new = r.json()["token"]
    assert new.startswith("mlc_") and new != conn["token"]
    r = await client.get("/api/v1/connection", headers=bearer(conn["token"]))
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "AUTHENTICATION_FAILED"
    r = await client.get("/api/v1/connection", headers=bearer(new))
    assert r.status_code == 200


async def test_disconnect_voids_token_keeps_data_and_records_history(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str, settings: Settings
) -> None:
    conn = await create_connection(client, admin_key, sandbox_url)
    await _insert_record(settings, conn["id"])
    r = await client.post(f"/api/v1/connections/{conn['id']}/disconnect",
                          headers=bearer(admin_key))
    assert r.status_code == 200
    assert r.json()["status"] == "disconnected"
    assert r.json()["disconnected_at"]
    for path in ("/api/v1/connection", f"/api/v1/connections/{conn['id']}/status"):
        r = await client.get(path, headers=bearer(conn["token"]))
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "CONNECTION_DISCONNECTED"
    # Disconnecting again is harmless; rotating is refused.
    r = await client.post(f"/api/v1/connections/{conn['id']}/disconnect",
                          headers=bearer(admin_key))
    assert r.status_code == 200
    r = await client.post(f"/api/v1/connections/{conn['id']}/token", headers=bearer(admin_key))
    assert r.status_code == 409
    assert await _record_count(settings, conn["id"]) == 1
    r = await client.delete(f"/api/v1/connections/{conn['id']}/data", headers=bearer(admin_key))
    assert r.status_code == 200
    assert r.json()["deleted_records"] == 1
    assert await _record_count(settings, conn["id"]) == 0
    history = await _history(settings, conn["id"])
    assert [(h["from_status"], h["to_status"]) for h in history] == [
        (None, "active"), ("active", "disconnected")
    ]


async def test_reauth_required_token_gets_specific_error(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str, settings: Settings
) -> None:
    conn = await create_connection(client, admin_key, sandbox_url)
    engine = create_engine(settings.effective_database_url)
    async with engine.begin() as c:
        await transition(c, conn["id"], Status.REAUTH_REQUIRED, reason="credentials revoked",
                         error_code="INVALID_CREDENTIALS")
    await engine.dispose()
    r = await client.get("/api/v1/connection", headers=bearer(conn["token"]))
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["code"] == "CONNECTION_REAUTH_REQUIRED"
    assert err["details"]["connection_id"] == conn["id"]
    assert "reauthorize" in err["details"]["reconnect"]["reauthorize_url"]
    r = await client.get(f"/api/v1/connections/{conn['id']}/status", headers=bearer(conn["token"]))
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "reauth_required"
    assert body["reauth_required"] is True and body["online"] is False
    assert body["reconnect"]["instructions"]


async def test_list_filters_and_cursor_pagination(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    made = [await create_connection(client, admin_key, sandbox_url, f"cust-{i % 2}")
            for i in range(5)]
    await client.post(f"/api/v1/connections/{made[0]['id']}/disconnect", headers=bearer(admin_key))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"page_size": 2} | ({"cursor": cursor} if cursor else {})
        r = await client.get("/api/v1/connections", headers=bearer(admin_key), params=params)
        assert r.status_code == 200
        page = r.json()
        assert len(page["data"]) <= 2
        seen += [c["id"] for c in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [c["id"] for c in made]
    r = await client.get("/api/v1/connections", headers=bearer(admin_key),
                         params={"customer_id": "cust-1"})
    assert {c["id"] for c in r.json()["data"]} == {made[1]["id"], made[3]["id"]}
    r = await client.get("/api/v1/connections", headers=bearer(admin_key),
                         params={"status": "disconnected"})
    assert [c["id"] for c in r.json()["data"]] == [made[0]["id"]]
    r = await client.get("/api/v1/connections", headers=bearer(admin_key),
                         params={"integration": "sandbox", "status": "active"})
    assert len(r.json()["data"]) == 4
    r = await client.get("/api/v1/connections", headers=bearer(admin_key),
                         params={"status": "bogus"})
    assert r.status_code == 422
    r = await client.get("/api/v1/connections", headers=bearer(admin_key),
                         params={"cursor": "not-a-cursor"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "INVALID_CURSOR"
    r = await client.get("/api/v1/connections", headers=bearer(admin_key),
                         params={"page_size": 501})
    assert r.status_code == 422


async def test_credentials_are_encrypted_at_rest(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str, settings: Settings
) -> None:
    conn = await create_connection(client, admin_key, sandbox_url)
    from sqlalchemy import select

    from maintlink.store.tables import connections

    engine = create_engine(settings.effective_database_url)
    async with engine.connect() as c:
        row = (await c.execute(select(connections).where(connections.c.id == conn["id"]))).one()
    await engine.dispose()
    assert conn["_sandbox_key"] not in row.credentials_encrypted
    assert conn["token"] not in str(row._mapping.values())


@pytest.mark.parametrize("body", [
    {"customer_id": "c", "integration": "sandbox"},
    {"customer_id": "", "integration": "sandbox", "credentials": {}},
    {"customer_id": "c", "integration": "sandbox", "credentials": {}, "extra": 1},
    {"customer_id": "c", "integration": "sandbox", "credentials": {},
     "settings": {"sync_interval_minutes": 1}},
    ["not", "an", "object"],
])
async def test_bad_bodies_are_422(
    client: httpx.AsyncClient, admin_key: str, body: object
) -> None:
    r = await client.post("/api/v1/connections", headers=bearer(admin_key), json=body)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "VALIDATION_ERROR"
    assert err["details"]["errors"]


async def _insert_record(settings: Settings, connection_id: str) -> None:
    from maintlink.ids import new_id
    from maintlink.store.tables import records
    from maintlink.store.types import utcnow

    engine = create_engine(settings.effective_database_url)
    async with engine.begin() as c:
        await c.execute(records.insert().values(
            id=new_id("rec"), connection_id=connection_id, entity="work_orders",
            remote_id="1", data={"title": "x"}, modified_at=utcnow()))
    await engine.dispose()


async def _record_count(settings: Settings, connection_id: str) -> int:
    from maintlink.domain.connections import count_records

    engine = create_engine(settings.effective_database_url)
    async with engine.connect() as c:
        n = await count_records(c, connection_id)
    await engine.dispose()
    return n


async def _history(settings: Settings, connection_id: str) -> list[dict[str, object]]:
    from maintlink.domain.connections import transitions_of

    engine = create_engine(settings.effective_database_url)
    async with engine.connect() as c:
        h = await transitions_of(c, connection_id)
    await engine.dispose()
    return h


async def test_sandbox_key_helper(sandbox_url: str) -> None:
    assert (await new_sandbox_key(sandbox_url)).startswith("sbx_")
