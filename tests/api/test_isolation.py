"""An account never sees or changes another account's data, on any endpoint."""

from __future__ import annotations

import httpx

from tests.conftest import bearer, create_connection

# Every management route that names an object, with a harmless valid body.
ROUTES = [
    ("GET", "/api/v1/connections/{connection_id}", None),
    ("PATCH", "/api/v1/connections/{connection_id}", {"settings": {"page_size": 50}}),
    ("GET", "/api/v1/connections/{connection_id}/status", None),
    ("POST", "/api/v1/connections/{connection_id}/disconnect", None),
    ("DELETE", "/api/v1/connections/{connection_id}/data", None),
    ("POST", "/api/v1/connections/{connection_id}/token", None),
    ("GET", "/api/v1/connections/{connection_id}/webhook", None),
    ("PUT", "/api/v1/connections/{connection_id}/webhook", {"url": "https://a.example.com/"}),
    ("DELETE", "/api/v1/connections/{connection_id}/webhook", None),
    ("POST", "/api/v1/connections/{connection_id}/syncs", None),
    ("GET", "/api/v1/connections/{connection_id}/syncs", None),
    ("GET", "/api/v1/connections/{connection_id}/sync-status", None),
    ("POST", "/api/v1/connections/{connection_id}/reauthorize",
     {"credentials": {"base_url": "http://127.0.0.1:9", "api_key": "x"}}),
    ("GET", "/api/v1/connections/{connection_id}/field-mappings", None),
    ("PUT", "/api/v1/connections/{connection_id}/field-mappings", {"mappings": {}}),
    ("GET", "/api/v1/webhook-endpoints/{endpoint_id}", None),
    ("PATCH", "/api/v1/webhook-endpoints/{endpoint_id}", {"description": "x"}),
    ("DELETE", "/api/v1/webhook-endpoints/{endpoint_id}", None),
    ("GET", "/api/v1/webhook-endpoints/{endpoint_id}/secret", None),
    ("POST", "/api/v1/webhook-endpoints/{endpoint_id}/rotate-secret", None),
    ("POST", "/api/v1/webhook-endpoints/{endpoint_id}/test", None),
    ("POST", "/api/v1/webhook-endpoints/{endpoint_id}/enable", None),
    ("POST", "/api/v1/webhook-endpoints/{endpoint_id}/recover",
     {"since": "2000-01-01T00:00:00Z"}),
    ("GET", "/api/v1/webhook-endpoints/{endpoint_id}/attempts", None),
    ("GET", "/api/v1/events/{event_id}", None),
    ("GET", "/api/v1/events/{event_id}/attempts", None),
    ("POST", "/api/v1/events/{event_id}/resend", None),
    ("GET", "/api/v1/link-tokens/{link_token_id}", None),
    ("POST", "/api/v1/link-tokens/{link_token_id}/revoke", None),
]
# Data routes, used with connection tokens; another connection's token sees nothing.
TOKEN_ROUTES = [
    ("GET", "/api/v1/{path}/{record_id}", None),
    ("PATCH", "/api/v1/work-orders/{record_id}", {"title": "x"}),
]
LISTS = ["/api/v1/connections", "/api/v1/webhook-endpoints", "/api/v1/events"]
# Also: link-token codes of one account cannot be exchanged by another (tests/web).


async def test_other_account_sees_and_changes_nothing(
    client: httpx.AsyncClient, admin_key: str, other_admin_key: str, sandbox_url: str
) -> None:
    conn = await create_connection(client, admin_key, sandbox_url)
    r = await client.put(f"/api/v1/connections/{conn['id']}/webhook", headers=bearer(admin_key),
                         json={"url": "https://hooks.example.com/"})
    endpoint = r.json()["endpoint"]
    event = (await client.get("/api/v1/events", headers=bearer(admin_key))).json()["data"][0]
    link = (await client.post("/api/v1/link-tokens", headers=bearer(admin_key), json={
        "customer_id": "cust-1", "redirect_uri": "https://app.example.com/cb"})).json()
    ids = {"connection_id": conn["id"], "endpoint_id": endpoint["id"], "event_id": event["id"],
           "link_token_id": link["id"]}
    before = await _snapshot(client, admin_key, ids)

    for method, template, body in ROUTES:
        r = await client.request(method, template.format(**ids),
                                 headers=bearer(other_admin_key), json=body)
        assert r.status_code == 404, (method, template, r.text)
        assert r.json()["error"]["code"] == "NOT_FOUND"
    for path in LISTS:
        r = await client.get(path, headers=bearer(other_admin_key))
        assert r.json()["data"] == [], path
    r = await client.get("/api/v1/connections", headers=bearer(other_admin_key),
                         params={"customer_id": "cust-1"})
    assert r.json()["data"] == []
    r = await client.get("/api/v1/events", headers=bearer(other_admin_key),
                         params={"connection_id": conn["id"]})
    assert r.json()["data"] == []
    # A connection-scoped endpoint cannot point at another account's connection.
    r = await client.post("/api/v1/webhook-endpoints", headers=bearer(other_admin_key),
                          json={"url": "https://x.example.com/", "connection_id": conn["id"]})
    assert r.status_code == 404

    assert await _snapshot(client, admin_key, ids) == before
    r = await client.get(f"/api/v1/connections/{conn['id']}/status", headers=bearer(conn["token"]))
    assert r.status_code == 200 and r.json()["status"] == "active"


async def _snapshot(client: httpx.AsyncClient, key: str, ids: dict[str, str]) -> list[object]:
    paths = [f"/api/v1/connections/{ids['connection_id']}",
             f"/api/v1/webhook-endpoints/{ids['endpoint_id']}",
             f"/api/v1/webhook-endpoints/{ids['endpoint_id']}/secret",
             f"/api/v1/events/{ids['event_id']}", "/api/v1/events",
             f"/api/v1/link-tokens/{ids['link_token_id']}"]
    return [(await client.get(p, headers=bearer(key))).json() for p in paths]


def test_every_route_naming_an_object_is_covered() -> None:
    """New routes must be added to ROUTES (admin key) or TOKEN_ROUTES (connection token)."""
    from maintlink.app import create_app
    from maintlink.config import Settings
    from maintlink.unified import ENTITY_API

    spec = create_app(Settings()).openapi()
    shared = {"/api/v1/integrations/{slug}"}  # the catalogue is the same for every account
    routes = {(m.upper(), p) for p, ops in spec["paths"].items()
              if "{" in p and p not in shared for m in ops}
    covered = {(m, t) for m, t, _ in ROUTES}
    for method, template, _ in TOKEN_ROUTES:
        for path in {e[0] for e in ENTITY_API.values()}:
            covered.add((method, template.replace("{path}", path)))
    assert routes <= covered, routes - covered
    assert {r for r in covered if "{record_id}" not in r[1]} <= routes
