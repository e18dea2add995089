"""A next major version served beside v1 from the same handlers (test-only v2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from maintlink.app import create_app
from maintlink.config import Settings
from maintlink.versioning import APIVersion, VersionChange, VersionRegistry, rename_field
from tests.conftest import bearer, new_sandbox_key, serve_app

DEPRECATED = datetime(2026, 1, 1, tzinfo=UTC)
SUNSET = datetime(2027, 6, 1, tzinfo=UTC)


def _customer_rename_request(body: Any) -> Any:
    if isinstance(body, dict) and "customer_external_id" in body:
        body = dict(body)
        body["customer_id"] = body.pop("customer_external_id")
    return body


def _registry() -> VersionRegistry:
    rename = rename_field("connection", "customer_id", "customer_external_id")
    change = VersionChange(
        description=rename.description,
        responses=rename.responses,
        requests={("POST", r"/api/v1/connections"): _customer_rename_request},
        openapi=rename.openapi,
    )
    v1 = APIVersion("v1", deprecated_at=DEPRECATED, sunset_at=SUNSET,
                    deprecation_link="https://example.com/docs/versioning")
    return VersionRegistry([v1, APIVersion("v2", changes=(change,))])


@pytest.fixture
async def versioned(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, registry=_registry(), auto_migrate=False)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as c:
        yield c


async def test_v2_renames_a_field_in_requests_and_responses(
    versioned: httpx.AsyncClient, admin_key: str, sandbox_url: str
) -> None:
    key = await new_sandbox_key(sandbox_url)
    r = await versioned.post(
        "/api/v2/connections", headers=bearer(admin_key),
        json={"customer_external_id": "cust-9", "integration": "sandbox",
              "credentials": {"base_url": sandbox_url, "api_key": key}},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["customer_external_id"] == "cust-9"
    assert "customer_id" not in created
    assert r.headers["maintlink-version"] == "v2"
    assert "deprecation" not in r.headers

    r = await versioned.get("/api/v2/connections", headers=bearer(admin_key))
    assert r.json()["data"][0]["customer_external_id"] == "cust-9"
    r = await versioned.get("/api/v1/connections", headers=bearer(admin_key))
    assert r.json()["data"][0]["customer_id"] == "cust-9"
    assert "customer_external_id" not in r.json()["data"][0]
    # Errors keep their shape in every version.
    r = await versioned.get("/api/v2/connections/conn_nope", headers=bearer(admin_key))
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"


async def test_deprecated_version_announces_itself(
    versioned: httpx.AsyncClient, admin_key: str
) -> None:
    r = await versioned.get("/api/v1/integrations", headers=bearer(admin_key))
    assert r.status_code == 200
    assert r.headers["maintlink-version"] == "v1"
    assert r.headers["deprecation"] == f"@{int(DEPRECATED.timestamp())}"
    assert parsedate_to_datetime(r.headers["sunset"]) == SUNSET
    assert r.headers["link"] == '<https://example.com/docs/versioning>; rel="deprecation"'
    r = await versioned.get("/healthz")
    assert r.headers["maintlink-version"] == "v2"


async def test_openapi_per_version(versioned: httpx.AsyncClient) -> None:
    v1 = (await versioned.get("/api/v1/openapi.json")).json()
    v2 = (await versioned.get("/api/v2/openapi.json")).json()
    assert "/api/v1/connections" in v1["paths"]
    assert "/api/v2/connections" in v2["paths"]
    assert not any(p.startswith("/api/v1/") for p in v2["paths"])
    assert v2["info"]["version"] == "v2"
    v1_conn = v1["components"]["schemas"]["Connection"]["properties"]
    v2_conn = v2["components"]["schemas"]["Connection"]["properties"]
    assert "customer_id" in v1_conn and "customer_external_id" not in v1_conn
    assert "customer_external_id" in v2_conn and "customer_id" not in v2_conn
    docs = await versioned.get("/api/v2/docs")
    assert "/api/v2/openapi.json" in docs.text


async def test_webhook_bodies_are_rendered_in_the_endpoints_pinned_version(
    settings: Settings, admin_key: str, sandbox_url: str
) -> None:
    registry = VersionRegistry([APIVersion("v1"), APIVersion("v2", changes=(
        rename_field("event", "customer_id", "customer_external_id"),))])
    app = create_app(settings, registry=registry, auto_migrate=False)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as c:
        eps = {}
        for version in ("v1", "v2"):
            r = await c.post("/api/v1/webhook-endpoints", headers=bearer(admin_key), json={
                "url": f"https://{version}.example.com/hook", "api_version": version})
            assert r.status_code == 201, r.text
            eps[r.json()["id"]] = version
        key = await new_sandbox_key(sandbox_url)
        r = await c.post("/api/v1/connections", headers=bearer(admin_key), json={
            "customer_id": "cust-5", "integration": "sandbox",
            "credentials": {"base_url": sandbox_url, "api_key": key}})
        assert r.status_code == 201
    bodies = await _delivery_bodies(settings)
    assert len(bodies) == 2
    for endpoint_id, body in bodies:
        if eps[endpoint_id] == "v1":
            assert body["api_version"] == "v1" and body["customer_id"] == "cust-5"
        else:
            assert body["api_version"] == "v2" and body["customer_external_id"] == "cust-5"
            assert "customer_id" not in body


async def test_oversized_webhook_bodies_point_to_the_event(
    settings: Settings, admin_key: str
) -> None:
    from maintlink.domain import events
    from maintlink.domain.accounts import create_admin_key
    from maintlink.domain.endpoints import create_endpoint
    from maintlink.runtime import build_runtime

    small = settings.model_copy(update={"webhook_max_payload_bytes": 1024})
    rt = build_runtime(small)
    try:
        async with rt.engine.begin() as conn:
            account_id, _, _ = await create_admin_key(conn, "big")
            await create_endpoint(conn, rt, account_id=account_id,
                                  url="https://hooks.example.com/x")
            event_id = await events.emit(conn, account_id=account_id, type="webhook.test",
                                         data={"endpoint_id": "ep_x", "message": "x" * 5000})
    finally:
        await rt.aclose()
        build_runtime(settings)  # restore the process-wide default for other tests
    [(_, body)] = await _delivery_bodies(settings)
    assert body["id"] == event_id
    assert body["data"] == {"truncated": True, "event_url": f"/api/v1/events/{event_id}"}


async def _delivery_bodies(settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    import json

    from sqlalchemy import select

    from maintlink.store.db import create_engine
    from maintlink.store.tables import deliveries

    engine = create_engine(settings.effective_database_url)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(deliveries.c.endpoint_id, deliveries.c.body))).all()
    await engine.dispose()
    return [(r.endpoint_id, json.loads(r.body)) for r in rows]
