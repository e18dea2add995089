"""Small helpers shared by the sandbox tests."""

from __future__ import annotations

import httpx


def new_key(http: httpx.Client, **body: object) -> str:
    response = http.post("/_sandbox/credentials", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["api_key"])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def list_all(
    http: httpx.Client, path: str, headers: dict[str, str], **params: object
) -> list[dict[str, object]]:
    """Follow next_cursor to the end; returns every record in order."""
    records: list[dict[str, object]] = []
    query: dict[str, object] = dict(params)
    while True:
        response = http.get(path, headers=headers, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        records.extend(body["data"])
        if body["next_cursor"] is None:
            return records
        query = {"cursor": body["next_cursor"], "limit": params.get("limit", 100)}
