"""Webhook endpoints, events and the delivery log through the HTTP API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from maintlink.config import Settings
from maintlink.domain.connections import Status, transition
from maintlink.store.db import create_engine
from tests.conftest import bearer, create_connection

URL = "https://hooks.example.com/maintlink"


async def _endpoint(client: httpx.AsyncClient, key: str, **body: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/webhook-endpoints", headers=bearer(key),
                          json={"url": URL, **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_endpoint_crud_and_secret(client: httpx.AsyncClient, admin_key: str) -> None:
    ep = await _endpoint(client, admin_key, events=["connection.created"],
                         description="main", headers={"X-Team": "ops"},
                         rate_limit_per_second=5)
    assert ep["secret"].startswith("whsec_")
    import base64

    assert len(base64.b64decode(ep["secret"][6:])) == 32
    assert ep["status"] == "enabled" and ep["api_version"] == "v1"
    assert ep["events"] == ["connection.created"] and ep["headers"] == {"X-Team": "ops"}
    r = await client.get(f"/api/v1/webhook-endpoints/{ep['id']}/secret", headers=bearer(admin_key))
    assert r.json()["secret"] == ep["secret"]
    r = await client.patch(f"/api/v1/webhook-endpoints/{ep['id']}", headers=bearer(admin_key),
                           json={"events": None, "description": "all"})
    assert r.status_code == 200
    assert r.json()["events"] is None and r.json()["description"] == "all"
    assert r.json()["url"] == URL
    r = await client.get("/api/v1/webhook-endpoints", headers=bearer(admin_key))
    assert [e["id"] for e in r.json()["data"]] == [ep["id"]]
    assert "secret" not in r.json()["data"][0]
    r = await client.post(f"/api/v1/webhook-endpoints/{ep['id']}/rotate-secret",
                          headers=bearer(admin_key))
    assert r.status_code == 200
    new = r.json()
    assert new["secret"] != ep["secret"] and new["previous_secret_expires_at"]
    r = await client.delete(f"/api/v1/webhook-endpoints/{ep['id']}", headers=bearer(admin_key))
    assert r.status_code == 204
    r = await client.get(f"/api/v1/webhook-endpoints/{ep['id']}", headers=bearer(admin_key))
    assert r.status_code == 404


@pytest.mark.parametrize("url", [
    "http://hooks.example.com/x",
    "https://127.0.0.1/x",
    "https://2130706433/x",
    "https://0x7f.0.0.1/x",
    "https://[::ffff:127.0.0.1]/x",
    "https://10.0.0.1/x",
    "https://169.254.169.254/latest/meta-data",
    "https://user:pass@hooks.example.com/x",
    "https://localhost/x",
    "ftp://hooks.example.com/x",
    "not a url",
])
async def test_hostile_urls_refused_at_configuration(
    client: httpx.AsyncClient, admin_key: str, url: str
) -> None:
    r = await client.post("/api/v1/webhook-endpoints", headers=bearer(admin_key), json={"url": url})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "INVALID_WEBHOOK_URL"
    assert len(err["message"]) > 10


async def test_bad_endpoint_bodies(client: httpx.AsyncClient, admin_key: str) -> None:
    cases = [
        ({"url": URL, "events": ["no.such.type"]}, 422, "VALIDATION_ERROR"),
        ({"url": URL, "headers": {"webhook-id": "x"}}, 422, "VALIDATION_ERROR"),
        ({"url": URL, "api_version": "v9"}, 400, "UNSUPPORTED_API_VERSION"),
        ({"url": URL, "connection_id": "conn_nope"}, 404, "NOT_FOUND"),
        ({"url": URL, "rate_limit_per_second": 0}, 422, "VALIDATION_ERROR"),
        ({"events": ["webhook.test"]}, 422, "VALIDATION_ERROR"),
    ]
    for body, status, code in cases:
        r = await client.post("/api/v1/webhook-endpoints", headers=bearer(admin_key), json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), body


async def test_connection_events_form_an_ordered_outbox(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str, settings: Settings
) -> None:
    ep = await _endpoint(client, admin_key)
    conn = await create_connection(client, admin_key, sandbox_url)
    engine = create_engine(settings.effective_database_url)
    async with engine.begin() as c:
        await transition(c, conn["id"], Status.OFFLINE, reason="3 failed checks",
                         error_code="PROVIDER_UNAVAILABLE")
    async with engine.begin() as c:
        await transition(c, conn["id"], Status.ACTIVE, reason="check succeeded")
    async with engine.begin() as c:
        await transition(c, conn["id"], Status.REAUTH_REQUIRED, reason="API key revoked",
                         error_code="INVALID_CREDENTIALS")
    await engine.dispose()
    await client.post(f"/api/v1/connections/{conn['id']}/disconnect", headers=bearer(admin_key))

    r = await client.get("/api/v1/events", headers=bearer(admin_key),
                         params={"connection_id": conn["id"]})
    evs = list(reversed(r.json()["data"]))
    assert [e["type"] for e in evs] == [
        "connection.created", "connection.status_changed", "connection.status_changed",
        "connection.reauthorization_required", "connection.disconnected",
    ]
    assert [e["sequence"] for e in evs] == [1, 2, 3, 4, 5]
    assert all(e["customer_id"] == "cust-1" and e["connection_id"] == conn["id"] for e in evs)
    assert evs[1]["data"] == {"previous_status": "active", "status": "offline", "online": False,
                              "reason": "3 failed checks", "error_code": "PROVIDER_UNAVAILABLE"}
    assert evs[2]["data"]["online"] is True
    assert evs[3]["data"]["reconnect"]["instructions"]
    assert evs[3]["data"]["error_code"] == "INVALID_CREDENTIALS"

    r = await client.get(f"/api/v1/events/{evs[0]['id']}", headers=bearer(admin_key))
    detail = r.json()
    assert [d["endpoint_id"] for d in detail["deliveries"]] == [ep["id"]]
    assert detail["deliveries"][0]["status"] == "pending"

    r = await client.get("/api/v1/events", headers=bearer(admin_key),
                         params={"type": "connection.disconnected"})
    assert [e["id"] for e in r.json()["data"]] == [evs[4]["id"]]
    r = await client.get("/api/v1/events", headers=bearer(admin_key),
                         params={"since": "2999-01-01T00:00:00Z"})
    assert r.json()["data"] == []
    r = await client.get("/api/v1/events", headers=bearer(admin_key), params={"type": "nope"})
    assert r.status_code == 422


async def test_event_pagination(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    for i in range(5):
        await create_connection(client, admin_key, sandbox_url, f"c{i}")
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"page_size": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/events", headers=bearer(admin_key),
                                 params=params)).json()
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 5
    assert seen == sorted(seen, reverse=True)


async def test_subscriptions_scope_and_connection_webhook(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    only_created = await _endpoint(client, admin_key, events=["connection.created"])
    only_disconnected = await _endpoint(client, admin_key, events=["connection.disconnected"])
    key = (await client.post(f"{sandbox_url}/_sandbox/credentials")).json()["api_key"]
    r = await client.post("/api/v1/connections", headers=bearer(admin_key), json={
        "customer_id": "c", "integration": "sandbox",
        "credentials": {"base_url": sandbox_url, "api_key": key},
        "webhook": {"url": "https://customer-hooks.example.com/x",
                    "events": ["connection.created", "connection.disconnected"]}})
    assert r.status_code == 201, r.text
    conn = r.json()
    other = await create_connection(client, admin_key, sandbox_url, "other")

    r = await client.get(f"/api/v1/connections/{conn['id']}/webhook", headers=bearer(admin_key))
    assert r.status_code == 200
    own = r.json()["endpoint"]
    assert own["connection_id"] == conn["id"] and own["managed_by_connection"] is True
    r = await client.get(f"/api/v1/connections/{other['id']}/webhook", headers=bearer(admin_key))
    assert r.status_code == 404

    evs = (await client.get("/api/v1/events", headers=bearer(admin_key),
                            params={"type": "connection.created"})).json()["data"]
    by_conn = {e["connection_id"]: e["id"] for e in evs}
    mine = (await client.get(f"/api/v1/events/{by_conn[conn['id']]}",
                             headers=bearer(admin_key))).json()
    theirs = (await client.get(f"/api/v1/events/{by_conn[other['id']]}",
                               headers=bearer(admin_key))).json()
    assert {d["endpoint_id"] for d in mine["deliveries"]} == {only_created["id"], own["id"]}
    assert {d["endpoint_id"] for d in theirs["deliveries"]} == {only_created["id"]}
    assert only_disconnected["id"] not in {d["endpoint_id"] for d in mine["deliveries"]}

    r = await client.put(f"/api/v1/connections/{conn['id']}/webhook", headers=bearer(admin_key),
                         json={"url": "https://customer-hooks.example.com/y", "events": None})
    assert r.status_code == 200
    assert r.json()["endpoint"]["id"] == own["id"] and r.json()["secret"] is None
    assert r.json()["endpoint"]["events"] is None
    r = await client.put(f"/api/v1/connections/{other['id']}/webhook", headers=bearer(admin_key),
                         json={"url": "https://other.example.com/"})
    assert r.json()["secret"].startswith("whsec_")
    r = await client.put(f"/api/v1/connections/{other['id']}/webhook", headers=bearer(admin_key),
                         json={"url": "https://10.1.2.3/"})
    assert r.json()["error"]["code"] == "INVALID_WEBHOOK_URL"
    r = await client.delete(f"/api/v1/connections/{other['id']}/webhook",
                            headers=bearer(admin_key))
    assert r.status_code == 204


async def test_bad_connection_webhook_is_refused_before_connecting(
    client: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    r = await client.post("/api/v1/connections", headers=bearer(admin_key), json={
        "customer_id": "c", "integration": "sandbox",
        "credentials": {"base_url": sandbox_url, "api_key": "whatever"},
        "webhook": {"url": "https://192.168.1.10/hook"}})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "INVALID_WEBHOOK_URL"


async def test_test_resend_recover_enable(
    client: httpx.AsyncClient, admin_key: str, settings: Settings
) -> None:
    ep = await _endpoint(client, admin_key)
    r = await client.post(f"/api/v1/webhook-endpoints/{ep['id']}/test", headers=bearer(admin_key))
    assert r.status_code == 202
    event = r.json()
    assert event["type"] == "webhook.test" and event["data"]["endpoint_id"] == ep["id"]
    r = await client.post(f"/api/v1/events/{event['id']}/resend", headers=bearer(admin_key),
                          json={"endpoint_id": ep["id"]})
    assert r.status_code == 202
    assert r.json()["data"][0]["trigger"] == "manual"
    r = await client.post(f"/api/v1/events/{event['id']}/resend", headers=bearer(admin_key))
    assert len(r.json()["data"]) == 1
    detail = (await client.get(f"/api/v1/events/{event['id']}", headers=bearer(admin_key))).json()
    assert len(detail["deliveries"]) == 3

    from maintlink.domain.endpoints import disable_endpoint
    from maintlink.store.types import utcnow

    engine = create_engine(settings.effective_database_url)
    async with engine.begin() as c:
        assert await disable_endpoint(c, ep["id"], "410 Gone", utcnow())
    await engine.dispose()
    r = await client.get(f"/api/v1/webhook-endpoints/{ep['id']}", headers=bearer(admin_key))
    assert r.json()["status"] == "disabled" and r.json()["disabled_reason"] == "410 Gone"
    r = await client.post(f"/api/v1/webhook-endpoints/{ep['id']}/test", headers=bearer(admin_key))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "WEBHOOK_ENDPOINT_DISABLED"
    r = await client.post(f"/api/v1/webhook-endpoints/{ep['id']}/enable", headers=bearer(admin_key))
    assert r.json()["status"] == "enabled"
    r = await client.post(f"/api/v1/webhook-endpoints/{ep['id']}/recover",
                          headers=bearer(admin_key), json={"since": "2000-01-01T00:00:00Z"})
    assert r.status_code == 202
    assert r.json()["recovered"] == 3
    r = await client.post(f"/api/v1/webhook-endpoints/{ep['id']}/recover",
                          headers=bearer(admin_key), json={"since": "2000-01-01T00:00:00"})
    assert r.status_code == 422
    r = await client.get(f"/api/v1/webhook-endpoints/{ep['id']}/attempts",
                         headers=bearer(admin_key), params={"status": "failed"})
    assert r.status_code == 200 and r.json()["data"] == []
