from __future__ import annotations

import httpx

from tests.conftest import bearer


async def test_registry_lists_sandbox_with_form_fields(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    r = await client.get("/api/v1/integrations", headers=bearer(admin_key))
    assert r.status_code == 200
    by_slug = {i["slug"]: i for i in r.json()["data"]}
    sandbox = by_slug["sandbox"]
    assert sandbox["auth_type"] == "api_key"
    fields = {f["name"]: f for f in sandbox["credential_fields"]}
    assert set(fields) == {"base_url", "api_key"}
    assert fields["api_key"]["secret"] is True and fields["base_url"]["secret"] is False
    assert all(f["label"] and f["type"] for f in fields.values())
    assert "work_orders" in sandbox["entities"]
    assert isinstance(sandbox["supports_writes"], bool)
    r = await client.get("/api/v1/integrations/sandbox", headers=bearer(admin_key))
    assert r.json()["slug"] == "sandbox"
    r = await client.get("/api/v1/integrations/nope", headers=bearer(admin_key))
    assert r.status_code == 404
