"""An account never sees or changes another account's data, on any endpoint."""

from __future__ import annotations

import httpx

from tests.conftest import bearer, create_connection

# Every management route that names a connection, with a harmless body.
ROUTES = [
    ("GET", "/api/v1/connections/{id}", None),
    ("GET", "/api/v1/connections/{id}/status", None),
    ("POST", "/api/v1/connections/{id}/disconnect", None),
    ("DELETE", "/api/v1/connections/{id}/data", None),
    ("POST", "/api/v1/connections/{id}/token", None),
]


async def test_other_account_sees_and_changes_nothing(
    client: httpx.AsyncClient, admin_key: str, other_admin_key: str, sandbox_url: str
) -> None:
    conn = await create_connection(client, admin_key, sandbox_url)
    for method, template, body in ROUTES:
        r = await client.request(method, template.format(id=conn["id"]),
                                 headers=bearer(other_admin_key), json=body)
        assert r.status_code == 404, (method, template, r.text)
        assert r.json()["error"]["code"] == "NOT_FOUND"
    r = await client.get("/api/v1/connections", headers=bearer(other_admin_key))
    assert r.json()["data"] == []
    r = await client.get("/api/v1/connections", headers=bearer(other_admin_key),
                         params={"customer_id": "cust-1"})
    assert r.json()["data"] == []
    # Nothing changed for the owner: same token works, still active.
    r = await client.get(f"/api/v1/connections/{conn['id']}/status", headers=bearer(conn["token"]))
    assert r.status_code == 200 and r.json()["status"] == "active"


def test_every_connection_route_is_covered() -> None:
    from maintlink.app import build_api_router

    paths = {(m, r.path) for r in build_api_router().routes
             for m in getattr(r, "methods", ()) if "{connection_id}" in r.path}
    covered = {(m, t.replace("{id}", "{connection_id}")) for m, t, _ in ROUTES}
    assert paths <= covered, paths - covered
