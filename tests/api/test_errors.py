from __future__ import annotations

import re

import httpx
import pytest

from maintlink.app import create_app
from maintlink.config import Settings
from maintlink.versioning import APIVersion, VersionRegistry
from tests.conftest import bearer, serve_app


def _is_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["type"] and err["message"]
    assert err["request_id"] == r.headers["x-request-id"]
    assert r.headers["maintlink-version"] == "v1"


async def test_request_id_is_kept_or_generated(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-Id": "abc-123.x"})
    assert r.headers["x-request-id"] == "abc-123.x"
    r = await client.get("/healthz", headers={"X-Request-Id": "bad id with spaces!"})
    assert re.fullmatch(r"req_[0-9A-Z]{26}", r.headers["x-request-id"])
    r = await client.get("/healthz")
    assert r.headers["x-request-id"].startswith("req_")
    assert r.headers["maintlink-version"] == "v1"


async def test_auth_errors(client: httpx.AsyncClient) -> None:
    _is_error(await client.get("/api/v1/connections"), 401, "AUTHENTICATION_FAILED")
    _is_error(await client.get("/api/v1/connections", headers=bearer("mlk_nope")),
              401, "AUTHENTICATION_FAILED")
    _is_error(await client.get("/api/v1/connections", headers={"Authorization": "Basic x"}),
              401, "AUTHENTICATION_FAILED")
    _is_error(await client.get("/api/v1/connection", headers=bearer("mlc_nope")),
              401, "AUTHENTICATION_FAILED")


async def test_routing_errors(client: httpx.AsyncClient, admin_key: str) -> None:
    _is_error(await client.get("/api/v1/nope"), 404, "NOT_FOUND")
    _is_error(await client.get("/nope"), 404, "NOT_FOUND")
    r = await client.put("/api/v1/connections", headers=bearer(admin_key))
    _is_error(r, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in r.headers["allow"]
    _is_error(await client.get("/api/v1/connections/conn_x", headers=bearer(admin_key)),
              404, "NOT_FOUND")


async def test_bad_json_and_huge_bodies(client: httpx.AsyncClient, admin_key: str) -> None:
    r = await client.post("/api/v1/connections", content=b"{not json",
                          headers={**bearer(admin_key), "Content-Type": "application/json"})
    _is_error(r, 400, "INVALID_JSON")
    r = await client.post("/api/v1/connections", content=b"x" * 2_000_000,
                          headers={**bearer(admin_key), "Content-Type": "application/json"})
    _is_error(r, 413, "PAYLOAD_TOO_LARGE")

    async def chunks():  # no Content-Length: the limit applies while streaming
        for _ in range(40):
            yield b"y" * 65536

    r = await client.post("/api/v1/connections", content=chunks(),
                          headers={**bearer(admin_key), "Content-Type": "application/json"})
    _is_error(r, 413, "PAYLOAD_TOO_LARGE")


async def test_unexpected_exception_leaks_nothing(settings: Settings) -> None:
    app = create_app(settings, auto_migrate=False)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/boom")
    _is_error(r, 500, "INTERNAL_ERROR")
    assert "secret internal detail" not in r.text


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["store"] in ("sqlite", "postgresql")


@pytest.mark.parametrize("header", ["v0", "2024-01-01", "V1", "latest"])
async def test_unsupported_version_header(client: httpx.AsyncClient, header: str) -> None:
    r = await client.get("/api/v1/integrations", headers={"Maintlink-Version": header})
    _is_error(r, 400, "UNSUPPORTED_API_VERSION")
    assert r.json()["error"]["details"]["supported_versions"] == ["v1"]


async def test_unsupported_version_in_path(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v7/integrations")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "UNSUPPORTED_API_VERSION"


async def test_version_mismatch(settings: Settings) -> None:
    registry = VersionRegistry([APIVersion("v1"), APIVersion("v2")])
    async with serve_app(create_app(settings, registry=registry, auto_migrate=False)) as url:
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.get("/api/v1/integrations", headers={"Maintlink-Version": "v2"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "API_VERSION_MISMATCH"


async def test_matching_version_header_is_accepted(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    r = await client.get("/api/v1/integrations",
                         headers={**bearer(admin_key), "Maintlink-Version": "v1"})
    assert r.status_code == 200
    assert r.headers["maintlink-version"] == "v1"
