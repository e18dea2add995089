"""Connector settings: listed per integration, accepted at creation and by PATCH, checked
against the integration's fields, and used by the connector."""

from __future__ import annotations

import httpx

from maintlink.app import create_app
from maintlink.config import Settings
from maintlink.connectors.registry import get_connector_class
from maintlink.domain import connections as conns
from maintlink.domain import credentials as creds
from maintlink.runtime import build_runtime
from tests.conftest import bearer, new_sandbox_key, serve_app


async def test_settings_listed_accepted_checked_and_changed(
    settings: Settings, admin_key: str, sandbox_url: str
) -> None:
    async with serve_app(create_app(settings, auto_migrate=False)) as url:
        async with httpx.AsyncClient(base_url=url, headers=bearer(admin_key)) as c:
            maximo = (await c.get("/api/v1/integrations/maximo")).json()
            sandbox = (await c.get("/api/v1/integrations/sandbox")).json()

            async def create(extra: dict[str, object]) -> httpx.Response:
                return await c.post("/api/v1/connections", json={
                    "customer_id": "c1", "integration": "sandbox",
                    "credentials": {"base_url": sandbox_url,
                                    "api_key": await new_sandbox_key(sandbox_url)},
                    "settings": {"sync_interval_minutes": 30, **extra}})

            unknown = await create({"object_structures": {"work_orders": "X"}})
            too_big = await create({"page_size": 501})
            created = await create({"page_size": 7, "timeout": 2.5})
            cid = created.json()["id"]
            changed = await c.patch(f"/api/v1/connections/{cid}",
                                    json={"settings": {"page_size": 9}})
            bad_type = await c.patch(f"/api/v1/connections/{cid}",
                                     json={"settings": {"page_size": "nine"}})
            reset = await c.patch(f"/api/v1/connections/{cid}",
                                  json={"settings": {"timeout": None}})
            nothing = await c.patch(f"/api/v1/connections/{cid}", json={"settings": {}})
            missing = await c.patch("/api/v1/connections/conn_nope", json={"settings": {}})

    names = {f["name"]: f for f in maximo["setting_fields"]}
    assert set(names) == {"page_size", "timeout", "object_structures", "custom_attributes"}
    assert names["object_structures"]["keys"][0] == "work_orders"
    assert names["custom_attributes"]["values"] == "strings"
    assert {f["name"] for f in sandbox["setting_fields"]} == {"page_size", "timeout"}
    assert unknown.status_code == 422
    err = unknown.json()["error"]
    assert err["code"] == "VALIDATION_ERROR"
    assert err["details"]["errors"][0]["location"] == "body.settings.object_structures"
    assert too_big.status_code == 422
    assert "at most 500" in too_big.json()["error"]["details"]["errors"][0]["message"]
    assert created.status_code == 201, created.text
    assert created.json()["settings"] == {
        "sync_interval_minutes": 30, "history_days": 90, "page_size": 7, "timeout": 2.5}
    assert changed.status_code == 200 and changed.json()["settings"]["page_size"] == 9
    assert bad_type.status_code == 422
    assert reset.json()["settings"] == {
        "sync_interval_minutes": 30, "history_days": 90, "page_size": 9}
    assert nothing.status_code == 200 and nothing.json()["settings"]["page_size"] == 9
    assert missing.status_code == 404

    rt = build_runtime(settings)
    try:
        async with rt.engine.connect() as conn:
            connector = creds.connector_for(rt, await conns.get_connection(conn, cid))
    finally:
        await rt.aclose()
    assert type(connector) is get_connector_class("sandbox")
    assert connector.settings["page_size"] == 9  # what the sync will ask for


def test_setting_field_checks() -> None:
    maximo = get_connector_class("maximo")
    assert maximo.settings_problems({"page_size": 1000, "timeout": 30,
                                     "object_structures": {"work_orders": "MXAPIWO_ACME"},
                                     "custom_attributes": {"assets": ["cxa", "cxb"]}}) == {}
    problems = maximo.settings_problems({
        "page_size": 0, "timeout": True, "object_structures": {"gizmos": "X"},
        "custom_attributes": {"assets": "cxa"}, "colour": "red",
    })
    assert problems == {
        "page_size": "must be at least 1",
        "timeout": "must be a number",
        "object_structures": "'gizmos' is not one of: work_orders, assets, locations, parts, "
                             "purchase_orders, vendors, users",
        "custom_attributes": "'assets' must be a list of non-empty strings",
        "colour": "not a setting of maximo (its settings: custom_attributes, object_structures, "
                  "page_size, timeout)",
    }
