"""The sandbox's `/api/v1`: auth, paging, the change filter, deletions, writes, bad input."""

from __future__ import annotations

import time

import httpx
import pytest

from maintlink.sandbox.server import RunningSandbox

from .helpers import bearer, list_all, new_key

PATHS = ("work-orders", "assets", "locations", "parts", "purchase-orders", "vendors", "users")


def test_me(http: httpx.Client, auth: dict[str, str]) -> None:
    response = http.get("/api/v1/me", headers=auth)
    assert response.status_code == 200
    body = response.json()
    assert body["organization"] == {"id": "org_7", "name": "Sandbox Manufacturing Co."}
    assert body["api_key"]["id"].startswith("key_")
    assert "api_key" not in body["api_key"]  # the secret is not echoed


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "invalid_api_key"),
        ({"Authorization": "Bearer nope"}, "invalid_api_key"),
        ({"Authorization": "Basic c2J4X2RlbW9fa2V5Og=="}, "invalid_api_key"),
    ],
)
def test_bad_credentials(http: httpx.Client, headers: dict[str, str], code: str) -> None:
    response = http.get("/api/v1/work-orders", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": {"code": code, "message": "Invalid API key"}}


def test_revoke_and_restore(http: httpx.Client) -> None:
    key = new_key(http, name="revocable")
    assert key.startswith("sbx_")
    assert http.get("/api/v1/me", headers=bearer(key)).status_code == 200

    revoked = http.post(f"/_sandbox/credentials/{key}/revoke")
    assert revoked.status_code == 200
    assert revoked.json() == {"api_key": key, "revoked": True}
    response = http.get("/api/v1/me", headers=bearer(key))
    assert response.status_code == 401
    assert response.json() == {
        "error": {"code": "api_key_revoked", "message": "API key has been revoked"}
    }

    restored = http.post(f"/_sandbox/credentials/{key}/restore")
    assert restored.json() == {"api_key": key, "revoked": False}
    assert http.get("/api/v1/me", headers=bearer(key)).status_code == 200


def test_credential_routes_errors(http: httpx.Client) -> None:
    for action in ("revoke", "restore", "faults"):
        response = http.post(f"/_sandbox/credentials/unknown-key/{action}", json={})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    chosen = new_key(http, api_key="sbx_chosen_key_1")
    assert chosen == "sbx_chosen_key_1"
    duplicate = http.post("/_sandbox/credentials", json={"api_key": chosen})
    assert duplicate.status_code == 409
    bad = http.post("/_sandbox/credentials", json={"api_key": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("path", PATHS)
def test_paging_returns_every_record_once(
    sandbox: RunningSandbox, http: httpx.Client, auth: dict[str, str], path: str
) -> None:
    records = list_all(http, f"/api/v1/{path}", auth, limit=7)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))
    assert len(ids) == http.get("/_sandbox/stats").json()[path.replace("-", "_")]
    keys = [(r["updatedAt"], r["id"]) for r in records]
    assert keys == sorted(keys)  # change order, so a sync can checkpoint


def test_last_page_has_no_cursor(http: httpx.Client, auth: dict[str, str]) -> None:
    body = http.get("/api/v1/vendors", headers=auth, params={"limit": 500}).json()
    assert body["next_cursor"] is None and len(body["data"]) == 3


def test_get_one(http: httpx.Client, auth: dict[str, str]) -> None:
    first = http.get("/api/v1/assets", headers=auth, params={"limit": 1}).json()["data"][0]
    response = http.get(f"/api/v1/assets/{first['id']}", headers=auth)
    assert response.status_code == 200 and response.json() == first
    missing = http.get("/api/v1/assets/999", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    unknown = http.get("/api/v1/widgets", headers=auth)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


def test_updated_since(http: httpx.Client, auth: dict[str, str]) -> None:
    everything = list_all(http, "/api/v1/work-orders", auth, limit=500)
    middle = sorted(r["updatedAt"] for r in everything)[len(everything) // 2]
    recent = list_all(http, "/api/v1/work-orders", auth, limit=5, updated_since=middle)
    assert recent and all(r["updatedAt"] >= middle for r in recent)
    assert {r["id"] for r in recent} == {r["id"] for r in everything if r["updatedAt"] >= middle}
    # Other ISO 8601 spellings of the same instant filter the same way.
    offset = middle.replace("Z", "+00:00")
    same = list_all(http, "/api/v1/work-orders", auth, limit=500, updated_since=offset)
    assert [r["id"] for r in same] == [r["id"] for r in recent]


def test_change_feed_sees_creates_updates_and_deletes(
    http: httpx.Client, auth: dict[str, str]
) -> None:
    before = http.get("/_sandbox/stats").json()
    checkpoint = max(r["updatedAt"] for r in list_all(http, "/api/v1/assets", auth, limit=500))
    changed = http.post(
        "/_sandbox/changes", json={"entity": "assets", "create": 2, "update": 3, "delete": 2}
    )
    assert changed.status_code == 200
    summary = changed.json()
    created, deleted = summary["created"]["assets"], summary["deleted"]["assets"]
    assert len(created) == 2 and len(set(summary["updated"]["assets"])) == 3 and len(deleted) == 2

    feed = list_all(http, "/api/v1/assets", auth, limit=2, updated_since=checkpoint)
    by_id = {r["id"]: r for r in feed}
    touched = set(created) | set(summary["updated"]["assets"]) | set(deleted)
    assert touched <= set(by_id)
    for record_id in deleted:
        assert by_id[record_id]["deleted"] is True
        assert by_id[record_id]["deletedAt"] == by_id[record_id]["updatedAt"] >= checkpoint
    # Without the change filter, deleted records are gone.
    live = list_all(http, "/api/v1/assets", auth, limit=500)
    assert not {r["id"] for r in live} & set(deleted)
    assert http.get(f"/api/v1/assets/{deleted[0]}", headers=auth).status_code == 404

    after = http.get("/_sandbox/stats").json()
    assert after["assets"] == before["assets"] + 2 - 2
    assert after["deleted"]["assets"] == before["deleted"]["assets"] + 2


def test_paging_survives_changes_between_pages(http: httpx.Client, auth: dict[str, str]) -> None:
    """A record changed mid-listing moves to the end: it is seen again, never skipped."""
    first = http.get("/api/v1/parts", headers=auth, params={"limit": 5}).json()
    http.post("/_sandbox/changes", json={"entity": "parts", "update": 10})
    seen = [r["id"] for r in first["data"]]
    cursor = first["next_cursor"]
    while cursor:
        body = http.get("/api/v1/parts", headers=auth, params={"cursor": cursor}).json()
        seen += [r["id"] for r in body["data"]]
        cursor = body["next_cursor"]
    live = {r["id"] for r in list_all(http, "/api/v1/parts", auth, limit=500)}
    assert set(seen) == live


def test_background_changes(http: httpx.Client, auth: dict[str, str]) -> None:
    checkpoint = http.post("/_sandbox/changes", json={"entity": "users", "update": 1}).json()
    assert checkpoint["updated"]["users"]
    since = max(r["updatedAt"] for r in list_all(http, "/api/v1/users", auth, limit=500))
    faults = http.post("/_sandbox/faults", json={"change_rate_per_minute": 6000})
    assert faults.json()["change_rate_per_minute"] == 6000
    deadline = time.monotonic() + 5
    changed: list[dict[str, object]] = []
    while time.monotonic() < deadline and len(changed) < 5:
        time.sleep(0.1)
        changed = []
        for path in PATHS:
            changed += list_all(http, f"/api/v1/{path}", auth, limit=500, updated_since=since)
    http.post("/_sandbox/faults", json={"change_rate_per_minute": 0})
    assert len(changed) >= 5


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": 501}, "invalid_parameter"),
        ({"limit": 0}, "invalid_parameter"),
        ({"limit": "ten"}, "invalid_parameter"),
        ({"updated_since": "yesterday"}, "invalid_parameter"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
        ({"cursor": "eyJlIjogInVzZXJzIn0"}, "invalid_cursor"),  # valid JSON, wrong shape
    ],
)
def test_bad_list_parameters(
    http: httpx.Client, auth: dict[str, str], params: dict[str, object], code: str
) -> None:
    response = http.get("/api/v1/work-orders", headers=auth, params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_cursor_of_another_entity_is_refused(http: httpx.Client, auth: dict[str, str]) -> None:
    cursor = http.get("/api/v1/assets", headers=auth, params={"limit": 1}).json()["next_cursor"]
    response = http.get("/api/v1/parts", headers=auth, params={"cursor": cursor})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_cursor"


def test_create_and_update_work_order(http: httpx.Client, auth: dict[str, str]) -> None:
    asset = http.get("/api/v1/assets", headers=auth, params={"limit": 1}).json()["data"][0]
    user = http.get("/api/v1/users", headers=auth, params={"limit": 1}).json()["data"][0]
    created = http.post(
        "/api/v1/work-orders",
        headers=auth,
        json={
            "title": "Replace filter",
            "priority": "HIGH",
            "assetId": asset["id"],
            "dueDate": "2030-01-02",
        },
    )
    assert created.status_code == 201, created.text
    wo = created.json()
    assert wo["status"] == "OPEN" and wo["priority"] == "HIGH" and wo["assetId"] == asset["id"]
    assert wo["dueDate"] == "2030-01-02T00:00:00.000Z"
    assert wo["createdAt"] == wo["updatedAt"]

    patched = http.patch(
        f"/api/v1/work-orders/{wo['id']}",
        headers=auth,
        json={"status": "DONE", "assigneeIds": [user["id"]], "notes": "Filter swapped"},
    )
    assert patched.status_code == 200, patched.text
    done = patched.json()
    assert done["status"] == "DONE" and done["assigneeIds"] == [user["id"]]
    assert done["notes"] == "Filter swapped" and done["completedAt"]
    assert done["updatedAt"] >= wo["updatedAt"]
    assert http.get(f"/api/v1/work-orders/{wo['id']}", headers=auth).json() == done
    feed = http.get(
        "/api/v1/work-orders", headers=auth, params={"updated_since": wo["updatedAt"]}
    ).json()["data"]
    assert done in feed


def test_create_purchase_order(http: httpx.Client, auth: dict[str, str]) -> None:
    vendor = http.get("/api/v1/vendors", headers=auth, params={"limit": 1}).json()["data"][0]
    part = http.get("/api/v1/parts", headers=auth, params={"limit": 1}).json()["data"][0]
    response = http.post(
        "/api/v1/purchase-orders",
        headers=auth,
        json={
            "vendorId": vendor["id"],
            "items": [
                {"partId": part["id"], "quantity": 3, "unitCost": 2.5},
                {"description": "Shop rags", "quantity": 1, "unitCost": 10},
            ],
        },
    )
    assert response.status_code == 201, response.text
    po = response.json()
    assert po["status"] == "REQUESTED" and po["totalCost"] == 17.5
    assert po["items"][0]["description"] == part["name"]
    assert po["number"].startswith("PO-")


WO, PO, BAD = "/api/v1/work-orders", "/api/v1/purchase-orders", "invalid_request"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", WO, b"{not json", 400, "invalid_json"),
        ("POST", WO, b"[]", 400, BAD),
        ("POST", WO, b"{}", 400, BAD),
        ("POST", WO, b'{"title": "  "}', 400, BAD),
        ("POST", WO, b'{"title": 5}', 400, BAD),
        ("POST", WO, b'{"title": "x", "colour": 1}', 400, BAD),
        ("POST", WO, b'{"title": "x", "status": "DONE!"}', 400, BAD),
        ("POST", WO, b'{"title": "x", "dueDate": "soon"}', 400, BAD),
        ("POST", WO, b'{"title": "x", "assetId": "1"}', 400, BAD),
        ("PATCH", f"{WO}/100001", b"{}", 400, BAD),
        ("PATCH", f"{WO}/100001", b'{"status": null}', 400, BAD),
        ("PATCH", f"{WO}/999", b'{"notes": "x"}', 404, "not_found"),
        ("POST", PO, b'{"vendorId": "600001"}', 400, BAD),
        (
            "POST",
            PO,
            b'{"vendorId": "600001", "items": [{"quantity": 1, "unitCost": 1}]}',
            400,
            BAD,
        ),
        ("POST", "/api/v1/assets", b"{}", 405, "method_not_allowed"),
        ("DELETE", f"{WO}/100001", b"", 405, "method_not_allowed"),
    ],
)
def test_bad_writes(
    http: httpx.Client,
    auth: dict[str, str],
    method: str,
    path: str,
    body: bytes,
    status: int,
    code: str,
) -> None:
    response = http.request(method, path, headers=auth, content=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_scoped_and_read_only_keys(http: httpx.Client) -> None:
    key = new_key(http, entities=["work_orders"], read_only=True)
    assert http.get("/api/v1/work-orders", headers=bearer(key)).status_code == 200
    denied = http.get("/api/v1/assets", headers=bearer(key))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "insufficient_scope"
    write = http.post("/api/v1/work-orders", headers=bearer(key), json={"title": "x"})
    assert write.status_code == 403


def test_stats_and_reset(http: httpx.Client, auth: dict[str, str]) -> None:
    stats = http.get("/_sandbox/stats").json()
    for name in ("work_orders", "assets", "locations", "parts", "purchase_orders", "vendors"):
        assert isinstance(stats[name], int)
    assert stats["work_orders"] == 60 and stats["purchase_orders"] == 15
    http.post("/api/v1/work-orders", headers=auth, json={"title": "extra"})
    http.post("/_sandbox/changes", json={"entity": "work-orders", "delete": 5})
    changed = http.get("/_sandbox/stats").json()
    assert changed["work_orders"] == 56 and changed["deleted"]["work_orders"] == 5

    reset = http.post("/_sandbox/reset")
    assert reset.status_code == 200
    assert http.get("/_sandbox/stats").json() == stats


def test_reset_with_new_size(http: httpx.Client) -> None:
    assert http.post("/_sandbox/reset", json={"size": 20}).json()["work_orders"] == 20
    bad = http.post("/_sandbox/reset", json={"size": -1})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"


def test_unknown_route_and_changes_validation(http: httpx.Client) -> None:
    assert http.get("/nowhere").json()["error"]["code"] == "not_found"
    bad = http.post("/_sandbox/changes", json={"entity": "widgets", "create": 1})
    assert bad.status_code == 400
    negative = http.post("/_sandbox/changes", json={"create": -1})
    assert negative.status_code == 400


def test_huge_body_is_refused(http: httpx.Client, auth: dict[str, str]) -> None:
    body = b'{"title": "' + b"x" * 1_100_000 + b'"}'
    response = http.post("/api/v1/work-orders", headers=auth, content=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_list_credentials(http: httpx.Client, sandbox: RunningSandbox) -> None:
    key = new_key(http, name="listed")
    listed = {c["api_key"]: c for c in http.get("/_sandbox/credentials").json()["data"]}
    assert listed[key]["name"] == "listed" and listed[key]["revoked"] is False
    assert sandbox.api_key in listed
