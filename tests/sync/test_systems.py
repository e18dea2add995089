"""Every integration end to end: the simulators served as `maintlink serve` serves them,
connections made through the API, an initial sync, counts compared with the system's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from maintlink.connectors.registry import CONNECTORS
from maintlink.sandbox.state import SandboxState
from maintlink.sandbox.systems import SIMULATORS, create_systems_app
from maintlink.unified import ENTITY_API
from tests.conftest import bearer, serve_app
from tests.sync.conftest import Harness


@pytest.fixture
async def systems() -> AsyncIterator[str]:
    async with serve_app(create_systems_app(SandboxState(seed=3, size=30))) as url:
        yield url


async def _credentials(h: Harness, slug: str, base: str) -> dict[str, str]:
    grant = await h.sandbox_post_to(f"{base}/_sandbox/credentials", {})
    if slug == "sap_s4hana":
        return {"base_url": base, "client_id": "sap-demo-client",
                "client_secret": "sap-demo-secret", "refresh_token": grant["refresh_token"]}
    return {"base_url": base, "api_key": grant["api_key"]}


@pytest.mark.parametrize("slug", sorted(SIMULATORS))
async def test_connect_sync_and_read_every_system(
    harness: Harness, systems: str, slug: str
) -> None:
    h = harness
    base = f"{systems}/{slug}"
    r = await h.client.post("/api/v1/connections", headers=bearer(h.key), json={
        "customer_id": f"c-{slug}", "integration": slug,
        "credentials": await _credentials(h, slug, base), "settings": {"history_days": 3650}})
    assert r.status_code == 201, r.text
    conn = r.json()
    await h.sync(conn["id"])
    runs = (await h.client.get(f"/api/v1/connections/{conn['id']}/syncs",
                               headers=bearer(h.key))).json()["data"]
    assert runs[0]["status"] == "completed", runs[0]
    stats = (await h.client.get(f"{base}/_sandbox/stats")).json()
    connector = CONNECTORS[slug]
    for entity in connector.entities:
        path = ENTITY_API[entity][0]
        rows = await _all(h, conn["token"], path)
        assert rows, f"{slug}: no {entity}"
        if entity in ("work_orders", "assets"):
            assert len(rows) == stats[entity], (slug, entity)
    # A second sync with no changes writes nothing (and, for OAuth2, the rotated refresh
    # token stored by the first one still works).
    h.clock.advance(minutes=20)
    await h.client.post(f"/api/v1/connections/{conn['id']}/syncs", headers=bearer(h.key))
    await h.sync(conn["id"])
    runs = (await h.client.get(f"/api/v1/connections/{conn['id']}/syncs",
                               headers=bearer(h.key))).json()["data"]
    assert runs[0]["status"] == "completed", runs[0]
    assert all(c["created"] == 0 and c["deleted"] == 0 for c in runs[0]["entities"].values())


async def _all(h: Harness, token: str, path: str) -> list[dict[str, Any]]:
    out, cursor = [], None
    while True:
        q: dict[str, Any] = {"page_size": 500} | ({"cursor": cursor} if cursor else {})
        r = await h.client.get(f"/api/v1/{path}", headers=bearer(token), params=q)
        assert r.status_code == 200, r.text
        out += r.json()["data"]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return out
