"""The sync engine against the sandbox system over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from maintlink.domain.syncs import SyncRun, claim_due
from tests.conftest import bearer
from tests.sync.conftest import Harness

ENTITY_PATHS = {
    "work_orders": "work-orders",
    "assets": "assets",
    "locations": "locations",
    "parts": "parts",
    "purchase_orders": "purchase-orders",
    "vendors": "vendors",
    "users": "users",
}


async def _all(h: Harness, token: str, path: str, **params: Any) -> list[dict[str, Any]]:
    out, cursor = [], None
    while True:
        q = {"page_size": 7, **params} | ({"cursor": cursor} if cursor else {})
        r = await h.client.get(f"/api/v1/{path}", headers=bearer(token), params=q)
        assert r.status_code == 200, r.text
        out += r.json()["data"]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return out


async def test_initial_then_incremental_sync_end_to_end(harness: Harness) -> None:
    h = harness
    conn = await h.connect()
    sync_id = await h.sync(conn["id"])
    assert sync_id
    stats = (await h.client.get(f"{h.sandbox}/_sandbox/stats")).json()
    for entity, path in ENTITY_PATHS.items():
        rows = await _all(h, conn["token"], path)
        assert len(rows) == stats[entity], entity
        assert len({r["id"] for r in rows}) == len(rows)
    r = await h.client.get(f"/api/v1/connections/{conn['id']}/syncs", headers=bearer(h.key))
    run = r.json()["data"][0]
    assert run["kind"] == "initial" and run["status"] == "completed"
    assert run["entities"]["work_orders"]["created"] == stats["work_orders"]
    status = (
        await h.client.get(
            f"/api/v1/connections/{conn['id']}/sync-status", headers=bearer(conn["token"])
        )
    ).json()
    assert status["status"] == "completed" and status["last_successful_sync_at"]
    assert status["entities"]["work_orders"]["records"] == stats["work_orders"]
    assert status["entities"]["assets"]["data_fresh_as_of"]
    assert status["next_scheduled_sync_at"]

    # Changes at the source: 3 new, 2 changed, 1 deleted work orders.
    h.clock.advance(minutes=20)
    changed = await h.sandbox_post(
        "/_sandbox/changes", {"entity": "work_orders", "create": 3, "update": 2, "delete": 1}
    )
    assert changed
    r = await h.client.post(f"/api/v1/connections/{conn['id']}/syncs", headers=bearer(h.key))
    assert r.status_code == 202
    await h.sync(conn["id"])
    runs = (
        await h.client.get(f"/api/v1/connections/{conn['id']}/syncs", headers=bearer(h.key))
    ).json()["data"]
    assert runs[0]["kind"] == "incremental" and runs[0]["trigger"] == "manual"
    assert runs[0]["entities"]["work_orders"] == {"created": 3, "updated": 2, "deleted": 1}
    assert runs[0]["entities"]["assets"] == {"created": 0, "updated": 0, "deleted": 0}
    wos = await _all(h, conn["token"], "work-orders")
    assert len(wos) == stats["work_orders"] + 2
    deleted = await _all(h, conn["token"], "work-orders", include_deleted="true")
    assert len(deleted) == stats["work_orders"] + 3
    assert sum(1 for w in deleted if w["deleted_at"]) == 1

    evs = [e for e in await h.events(conn["id"]) if e["type"] == "sync.completed"]
    assert [e["data"]["kind"] for e in evs] == ["initial", "incremental"]
    assert evs[1]["data"]["entities"]["work_orders"] == {"created": 3, "updated": 2, "deleted": 1}


async def test_sync_with_no_changes_changes_nothing(harness: Harness) -> None:
    h = harness
    conn = await h.connect()
    await h.sync(conn["id"])
    before = await _all(h, conn["token"], "work-orders")
    h.clock.advance(minutes=20)
    await h.sync(conn["id"])
    runs = (
        await h.client.get(f"/api/v1/connections/{conn['id']}/syncs", headers=bearer(h.key))
    ).json()["data"]
    assert all(
        c == {"created": 0, "updated": 0, "deleted": 0} for c in runs[0]["entities"].values()
    )
    assert await _all(h, conn["token"], "work-orders") == before


async def test_data_api_filters_remote_data_and_modified_after(harness: Harness) -> None:
    h = harness
    conn = await h.connect()
    await h.sync(conn["id"])
    wos = await _all(h, conn["token"], "work-orders")
    some = wos[0]
    assert some["object"] == "work_order" and some["remote_id"]
    assert some["remote_data"] is None
    r = await h.client.get(
        f"/api/v1/work-orders/{some['id']}",
        headers=bearer(conn["token"]),
        params={"include_remote_data": "true"},
    )
    assert r.status_code == 200 and r.json()["remote_data"]["id"] == some["remote_id"]
    for status in {w["status"] for w in wos}:
        got = await _all(h, conn["token"], "work-orders", status=status)
        assert {w["id"] for w in got} == {w["id"] for w in wos if w["status"] == status}
    with_asset = next(w for w in wos if w["asset_ids"])
    got = await _all(h, conn["token"], "work-orders", asset_id=with_asset["asset_ids"][0])
    assert with_asset["id"] in {w["id"] for w in got}
    assert all(with_asset["asset_ids"][0] in w["asset_ids"] for w in got)
    parts = await _all(h, conn["token"], "parts")
    vendor = next(v for p in parts for v in p["vendor_ids"])
    got = await _all(h, conn["token"], "parts", vendor_id=vendor)
    assert got and all(vendor in p["vendor_ids"] for p in got)
    latest = max(w["modified_at"] for w in wos)
    assert await _all(h, conn["token"], "work-orders", modified_after=latest) == []
    r = await h.client.get(
        "/api/v1/work-orders",
        headers=bearer(conn["token"]),
        params={"modified_after": "2026-01-01T00:00:00"},
    )
    assert r.status_code == 422
    r = await h.client.get("/api/v1/work-orders", headers=bearer(h.key))
    assert r.status_code == 403
    r = await h.client.get("/api/v1/work-orders/rec_nope", headers=bearer(conn["token"]))
    assert r.status_code == 404


async def test_records_are_isolated_between_connections(harness: Harness) -> None:
    h = harness
    a, b = await h.connect("a"), await h.connect("b")
    await h.sync(a["id"])
    one = (await _all(h, a["token"], "work-orders"))[0]
    r = await h.client.get(f"/api/v1/work-orders/{one['id']}", headers=bearer(b["token"]))
    assert r.status_code == 404
    r = await h.client.patch(
        f"/api/v1/work-orders/{one['id']}", headers=bearer(b["token"]), json={"title": "hijack"}
    )
    assert r.status_code == 404
    assert await _all(h, b["token"], "work-orders") == []


async def test_field_mappings_apply_on_read(harness: Harness) -> None:
    h = harness
    conn = await h.connect()
    await h.sync(conn["id"])
    r = await h.client.put(
        f"/api/v1/connections/{conn['id']}/field-mappings",
        headers=bearer(h.key),
        json={
            "mappings": {
                "work_orders": {
                    "fields": {"title": "description"},
                    "custom_fields": {"raw_status": "status"},
                }
            }
        },
    )
    assert r.status_code == 200, r.text
    wo = (await _all(h, conn["token"], "work-orders"))[0]
    raw = (
        await h.client.get(
            f"/api/v1/work-orders/{wo['id']}",
            headers=bearer(conn["token"]),
            params={"include_remote_data": "true"},
        )
    ).json()["remote_data"]
    assert wo["title"] == raw.get("description")
    assert wo["custom_fields"]["raw_status"] == raw["status"]
    r = await h.client.put(
        f"/api/v1/connections/{conn['id']}/field-mappings",
        headers=bearer(h.key),
        json={"mappings": {"widgets": {}}},
    )
    assert r.status_code == 422
    r = await h.client.put(
        f"/api/v1/connections/{conn['id']}/field-mappings",
        headers=bearer(h.key),
        json={"mappings": {"work_orders": {"fields": {"id": "x"}}}},
    )
    assert r.status_code == 422


async def test_interrupted_sync_resumes_from_its_last_page(harness: Harness) -> None:
    h = harness
    conn = await h.connect()
    assert conn["id"] in await claim_due(h.rt, "w1", 10)
    run = SyncRun(h.rt, conn["id"], "w1")
    pages: list[int] = []  # one per page handed to a run
    dying = [True]  # while the first run lives, its fourth page never comes
    stuck = asyncio.Event()  # the first run waits for its fourth page

    from maintlink.connectors.sandbox import SandboxConnector

    original = SandboxConnector.list_records

    def counting(self: Any, entity: str, **kw: Any) -> Any:
        async def gen() -> Any:
            async for page in original(self, entity, **kw):
                if dying[0] and len(pages) == 3:
                    stuck.set()
                    await asyncio.Event().wait()  # until the run is cancelled
                pages.append(1)
                yield page

        return gen()

    SandboxConnector.list_records = counting  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(run.run())
        # The worker dies while it waits for its fourth page: the first three entities
        # (a page each) are committed, and no statement is under way. (Killed in the
        # middle of a statement instead, an SQLite connection in this process can outlive
        # its close with the write lock held, which a dead process's cannot.)
        async with asyncio.timeout(30):
            await stuck.wait()
        task.cancel()  # no clean-up runs
        await asyncio.gather(task, return_exceptions=True)
        # A dead process's database connections die with it: close what the cancelled
        # run may still hold. Its connection is rolled back and returned by a shielded
        # close that can outlive the task.
        async with asyncio.timeout(10):
            while h.rt.engine.pool.checkedout():  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)
        await h.rt.engine.dispose()
        first = len(pages)
        dying[0] = False
        h.clock.advance(seconds=h.rt.settings.sync_lease_seconds + 1)
        pages.clear()
        sync_id = await h.sync(conn["id"], worker="w2")
    finally:
        SandboxConnector.list_records = original  # type: ignore[method-assign]
    runs = (
        await h.client.get(f"/api/v1/connections/{conn['id']}/syncs", headers=bearer(h.key))
    ).json()["data"]
    assert len(runs) == 1 and runs[0]["id"] == sync_id and runs[0]["status"] == "completed"
    stats = (await h.client.get(f"{h.sandbox}/_sandbox/stats")).json()
    assert runs[0]["entities"]["work_orders"]["created"] == stats["work_orders"]
    assert len(await _all(h, conn["token"], "work-orders")) == stats["work_orders"]
    # The resumed run did not start over: it fetched only the pages after the three the
    # dead run committed.
    total = sum(-(-stats[e] // 100) for e in ENTITY_PATHS)
    assert first == 3 and len(pages) == total - first


async def test_only_one_worker_claims_a_connection(harness: Harness) -> None:
    h = harness
    conn = await h.connect()
    claims = await asyncio.gather(*(claim_due(h.rt, f"w{i}", 10) for i in range(6)))
    assert sum(conn["id"] in c for c in claims) == 1
    h.clock.advance(seconds=h.rt.settings.sync_lease_seconds + 1)  # the holder died
    assert conn["id"] in await claim_due(h.rt, "w9", 10)


async def test_provider_429_waits_and_continues(harness: Harness) -> None:
    h = harness
    conn = await h.connect()
    await h.sandbox_post("/_sandbox/faults", {"rate_limit_per_minute": 3})

    async def lift(seconds: float) -> None:
        h.sleeps.append(seconds)
        await h.sandbox_post("/_sandbox/faults", {"rate_limit_per_minute": None})

    assert conn["id"] in await claim_due(h.rt, "w1", 10)
    await SyncRun(h.rt, conn["id"], "w1", sleep=lift).run()
    assert h.sleeps and 0 < h.sleeps[0] <= 60
    runs = (
        await h.client.get(f"/api/v1/connections/{conn['id']}/syncs", headers=bearer(h.key))
    ).json()["data"]
    assert runs[0]["status"] == "completed"
    stats = (await h.client.get(f"{h.sandbox}/_sandbox/stats")).json()
    assert len(await _all(h, conn["token"], "work-orders")) == stats["work_orders"]


async def test_writes_with_and_without_idempotency_keys(harness: Harness) -> None:
    h = harness
    conn = await h.connect()
    await h.sync(conn["id"])
    before = (await h.client.get(f"{h.sandbox}/_sandbox/stats")).json()["work_orders"]
    body = {"title": "Replace bearing on pump 4", "priority": "HIGH", "status": "OPEN"}
    hdrs = {**bearer(conn["token"]), "Idempotency-Key": "wo-1"}
    first = await h.client.post("/api/v1/work-orders", headers=hdrs, json=body)
    assert first.status_code == 201, first.text
    again = await h.client.post("/api/v1/work-orders", headers=hdrs, json=body)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = await h.client.post("/api/v1/work-orders", headers=hdrs, json={**body, "title": "x"})
    assert other.status_code == 422 and other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    plain = await h.client.post("/api/v1/work-orders", headers=bearer(conn["token"]), json=body)
    assert plain.status_code == 201 and plain.json()["id"] != first.json()["id"]
    after = (await h.client.get(f"{h.sandbox}/_sandbox/stats")).json()["work_orders"]
    assert after == before + 2
    wo = first.json()
    assert wo["title"] == body["title"] and wo["priority"] == "HIGH"
    r = await h.client.get(f"/api/v1/work-orders/{wo['id']}", headers=bearer(conn["token"]))
    assert r.json()["title"] == body["title"]

    r = await h.client.patch(
        f"/api/v1/work-orders/{wo['id']}",
        headers=bearer(conn["token"]),
        json={"status": "IN_PROGRESS", "notes": "parts ordered"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "IN_PROGRESS"
    r = await h.client.patch(
        f"/api/v1/work-orders/{wo['id']}", headers=bearer(conn["token"]), json={"status": "BROKEN"}
    )
    assert r.status_code == 422
    r = await h.client.post(
        "/api/v1/purchase-orders",
        headers=bearer(conn["token"]),
        json={"vendor_id": "nope", "lines": [{"qty_ordered": "2", "unit_price": "10.5"}]},
    )
    assert r.status_code in (201, 422), r.text


async def test_writes_unsupported_are_501(harness: Harness, monkeypatch: Any) -> None:
    h = harness
    conn = await h.connect()
    from maintlink.connectors.sandbox import SandboxConnector

    monkeypatch.setattr(SandboxConnector, "writable_entities", ())
    r = await h.client.post(
        "/api/v1/work-orders", headers=bearer(conn["token"]), json={"title": "x"}
    )
    assert r.status_code == 501
    assert r.json()["error"]["code"] == "OPERATION_NOT_SUPPORTED"


async def _status(h: Harness, conn: dict[str, Any]) -> dict[str, Any]:
    r = await h.client.get(f"/api/v1/connections/{conn['id']}/status", headers=bearer(h.key))
    return dict(r.json())


async def test_revoked_credential_reauth_cycle(harness: Harness) -> None:
    h = harness
    conn = await h.connect()
    await h.sync(conn["id"])
    await h.sandbox_post(f"/_sandbox/credentials/{conn['_sandbox_key']}/revoke")
    await h.check(conn["id"])
    status = await _status(h, conn)
    assert status["status"] == "reauth_required" and status["reauth_required"] is True
    assert status["last_error"]["code"] == "PROVIDER_AUTH_FAILED"
    assert status["reconnect"]["reauthorize_url"].endswith("/reauthorize")
    evs = await h.events(conn["id"])
    assert evs[-1]["type"] == "connection.reauthorization_required"
    assert evs[-1]["data"]["reconnect"]["instructions"]
    r = await h.client.get("/api/v1/work-orders", headers=bearer(conn["token"]))
    assert r.status_code == 401 and r.json()["error"]["code"] == "CONNECTION_REAUTH_REQUIRED"
    # No sync is claimed while it needs reauthorization.
    h.clock.advance(hours=2)
    assert conn["id"] not in await claim_due(h.rt, "w1", 10)
    r = await h.client.post(f"/api/v1/connections/{conn['id']}/syncs", headers=bearer(h.key))
    assert r.status_code == 409

    # Bad new credentials are refused and change nothing.
    r = await h.client.post(
        f"/api/v1/connections/{conn['id']}/reauthorize",
        headers=bearer(h.key),
        json={"credentials": {"base_url": h.sandbox, "api_key": conn["_sandbox_key"]}},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_CREDENTIALS"
    new_key = (await h.sandbox_post("/_sandbox/credentials"))["api_key"]
    r = await h.client.post(
        f"/api/v1/connections/{conn['id']}/reauthorize",
        headers=bearer(h.key),
        json={"credentials": {"base_url": h.sandbox, "api_key": new_key}},
    )
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["id"] == conn["id"] and again["status"] == "active"
    assert again["token"] != conn["token"]
    r = await h.client.get("/api/v1/work-orders", headers=bearer(conn["token"]))
    assert r.status_code == 401 and r.json()["error"]["code"] == "AUTHENTICATION_FAILED"
    r = await h.client.get("/api/v1/work-orders", headers=bearer(again["token"]))
    assert r.status_code == 200 and r.json()["data"]  # data kept
    assert (await h.events(conn["id"]))[-1]["type"] == "connection.reauthorized"
    sync_id = await h.sync(conn["id"])  # the reauthorization queued an incremental sync
    run = (
        await h.client.get(f"/api/v1/connections/{conn['id']}/syncs", headers=bearer(h.key))
    ).json()["data"][0]
    assert run["id"] == sync_id and run["kind"] == "incremental"


async def test_offline_after_three_failures_and_back(harness: Harness) -> None:
    h = harness
    conn = await h.connect()
    await h.sandbox_post(f"/_sandbox/credentials/{conn['_sandbox_key']}/faults", {"offline": True})
    for expected in ("active", "active", "offline"):
        await h.check(conn["id"])
        assert (await _status(h, conn))["status"] == expected
    status = await _status(h, conn)
    assert status["online"] is False and status["last_error"]["code"] == "PROVIDER_UNAVAILABLE"
    # Reads still work from the store while the system is down.
    r = await h.client.get("/api/v1/work-orders", headers=bearer(conn["token"]))
    assert r.status_code == 200
    await h.sandbox_post(f"/_sandbox/credentials/{conn['_sandbox_key']}/faults", {"offline": False})
    await h.check(conn["id"])
    assert (await _status(h, conn))["status"] == "active"
    changes = [e for e in await h.events(conn["id"]) if e["type"] == "connection.status_changed"]
    assert [(e["data"]["previous_status"], e["data"]["status"]) for e in changes] == [
        ("active", "offline"),
        ("offline", "active"),
    ]


async def test_sync_failure_event_and_status(harness: Harness) -> None:
    h = harness
    conn = await h.connect()
    await h.sandbox_post(f"/_sandbox/credentials/{conn['_sandbox_key']}/faults", {"offline": True})
    await h.sync(conn["id"])
    failed = [e for e in await h.events(conn["id"]) if e["type"] == "sync.failed"]
    assert failed and failed[0]["data"]["will_retry"] is True
    assert failed[0]["data"]["error_code"] == "PROVIDER_UNAVAILABLE"
    status = (
        await h.client.get(f"/api/v1/connections/{conn['id']}/sync-status", headers=bearer(h.key))
    ).json()
    assert status["status"] == "failed" and status["last_error"]["code"] == "PROVIDER_UNAVAILABLE"


async def test_status_errors(harness: Harness) -> None:
    h = harness
    r = await h.client.get("/api/v1/connections/conn_x/sync-status", headers=bearer(h.key))
    assert r.status_code == 404
    conn = await h.connect()
    await h.client.post(f"/api/v1/connections/{conn['id']}/disconnect", headers=bearer(h.key))
    r = await h.client.post(f"/api/v1/connections/{conn['id']}/syncs", headers=bearer(h.key))
    assert r.status_code == 409
    h.clock.advance(hours=1)
    assert conn["id"] not in await claim_due(h.rt, "w1", 10)
    r = await h.client.post(
        f"/api/v1/connections/{conn['id']}/reauthorize",
        headers=bearer(h.key),
        json={"credentials": {"base_url": h.sandbox, "api_key": conn["_sandbox_key"]}},
    )
    assert r.status_code == 409
