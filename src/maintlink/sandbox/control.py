"""A small client for the sandbox's `/_sandbox` control routes (used by `maintlink sandbox ...`).

Every function takes the sandbox's base URL (e.g. `http://127.0.0.1:8090`), returns the decoded
JSON answer and raises `SandboxControlError` with a readable message on any failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_BASE_URL = "http://127.0.0.1:8090"
TIMEOUT = 10.0


class SandboxControlError(Exception):
    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.code = code


def _call(
    base_url: str, method: str, path: str, body: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    url = base_url.rstrip("/") + path
    try:
        response = httpx.request(method, url, json=body, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        raise SandboxControlError(f"Cannot reach the sandbox at {base_url}: {exc}") from exc
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.is_success and isinstance(answer, dict):
        return answer
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        raise SandboxControlError(
            f"{error.get('code')}: {error.get('message')}",
            status_code=response.status_code,
            code=error.get("code"),
        )
    raise SandboxControlError(
        f"Unexpected answer {response.status_code} from {url}", status_code=response.status_code
    )


def _key_path(api_key: str) -> str:
    return f"/_sandbox/credentials/{quote(api_key, safe='')}"


def create_credential(
    base_url: str = DEFAULT_BASE_URL,
    *,
    api_key: str | None = None,
    name: str | None = None,
    read_only: bool = False,
    entities: list[str] | None = None,
) -> dict[str, Any]:
    """Create an API key (a random `sbx_...` one unless `api_key` is given)."""
    body: dict[str, Any] = {"read_only": read_only}
    if api_key is not None:
        body["api_key"] = api_key
    if name is not None:
        body["name"] = name
    if entities is not None:
        body["entities"] = entities
    return _call(base_url, "POST", "/_sandbox/credentials", body)


def revoke(base_url: str, api_key: str) -> dict[str, Any]:
    """Revoke a key: the API then answers 401 `api_key_revoked` for it."""
    return _call(base_url, "POST", f"{_key_path(api_key)}/revoke")


def restore(base_url: str, api_key: str) -> dict[str, Any]:
    """Undo a revocation."""
    return _call(base_url, "POST", f"{_key_path(api_key)}/restore")


def set_faults(
    base_url: str,
    changes: Mapping[str, Any] | None = None,
    *,
    api_key: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Change fault switches, globally or for one key; only the given fields change.

    Give the fields as a mapping or as keywords: offline (bool), offline_mode ("503" |
    "refuse"), latency_ms (int), rate_limit_per_minute (int, or None to lift the limit),
    change_rate_per_minute (float, global only).
    """
    path = f"{_key_path(api_key)}/faults" if api_key else "/_sandbox/faults"
    return _call(base_url, "POST", path, {**(changes or {}), **fields})


def get_faults(base_url: str = DEFAULT_BASE_URL, *, api_key: str | None = None) -> dict[str, Any]:
    path = f"{_key_path(api_key)}/faults" if api_key else "/_sandbox/faults"
    return _call(base_url, "GET", path)


def stats(base_url: str = DEFAULT_BASE_URL) -> dict[str, Any]:
    """Live records per entity, plus a `deleted` sub-object."""
    return _call(base_url, "GET", "/_sandbox/stats")


def reset(
    base_url: str = DEFAULT_BASE_URL, *, seed: int | None = None, size: int | None = None
) -> dict[str, Any]:
    """Regenerate the data from the seed and clear every fault; credentials stay."""
    body = {k: v for k, v in {"seed": seed, "size": size}.items() if v is not None}
    return _call(base_url, "POST", "/_sandbox/reset", body)


def make_changes(
    base_url: str = DEFAULT_BASE_URL,
    *,
    entity: str | None = None,
    create: int = 0,
    update: int = 0,
    delete: int = 0,
) -> dict[str, Any]:
    """Create/update/delete records now; returns the changed ids by kind and entity."""
    body: dict[str, Any] = {"create": create, "update": update, "delete": delete}
    if entity is not None:
        body["entity"] = entity
    return _call(base_url, "POST", "/_sandbox/changes", body)
