"""API versions served side by side from the same handlers.

Handlers speak the base version (`BASE`). Every other version declares the changes that
turn base-shaped traffic into its own shape: response transforms per resource type (the
`object` field every resource carries), request transforms per route, and the matching
edit of the OpenAPI document. A request to `/api/v2/...` is routed to the base handler
and its bodies are transformed on the way in and out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Any

BASE = "v1"
HEADER = "Maintlink-Version"

JSON = Any


@dataclass(frozen=True)
class VersionChange:
    """One declared difference from the previous version."""

    description: str
    # object type -> transform of one resource dict (base shape -> this version)
    responses: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=dict)
    # (method, path regex on the base path) -> transform of a request body (this -> base)
    requests: dict[tuple[str, str], Callable[[JSON], JSON]] = field(default_factory=dict)
    # edit of the base OpenAPI document, in place
    openapi: Callable[[dict[str, Any]], None] | None = None


@dataclass(frozen=True)
class APIVersion:
    name: str
    changes: tuple[VersionChange, ...] = ()
    deprecated_at: datetime | None = None
    sunset_at: datetime | None = None
    deprecation_link: str | None = None

    @property
    def transforms(self) -> bool:
        return bool(self.changes)

    def deprecation_headers(self) -> list[tuple[bytes, bytes]]:
        if self.deprecated_at is None:
            return []
        out = [(b"deprecation", f"@{int(self.deprecated_at.timestamp())}".encode())]
        if self.sunset_at is not None:
            out.append((b"sunset", format_datetime(self.sunset_at, usegmt=True).encode()))
        if self.deprecation_link:
            out.append((b"link", f'<{self.deprecation_link}>; rel="deprecation"'.encode()))
        return out

    def transform_response(self, body: JSON) -> JSON:
        for change in self.changes:
            if change.responses:
                body = _walk(body, change.responses)
        return body

    def transform_request(self, method: str, base_path: str, body: JSON) -> JSON:
        for change in reversed(self.changes):
            for (m, pattern), fn in change.requests.items():
                if m == method and re.fullmatch(pattern, base_path):
                    body = fn(body)
        return body

    def transform_openapi(self, spec: dict[str, Any]) -> dict[str, Any]:
        for change in self.changes:
            if change.openapi is not None:
                change.openapi(spec)
        prefix = f"/api/{BASE}/"
        spec["paths"] = {
            (f"/api/{self.name}/" + p[len(prefix):] if p.startswith(prefix) else p): v
            for p, v in spec.get("paths", {}).items()
        }
        spec.setdefault("info", {})["version"] = self.name
        return spec


def _walk(node: JSON, fns: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> JSON:
    if isinstance(node, list):
        return [_walk(v, fns) for v in node]
    if isinstance(node, dict):
        out = {k: _walk(v, fns) for k, v in node.items()}
        fn = fns.get(out.get("object")) if isinstance(out.get("object"), str) else None
        return fn(out) if fn else out
    return node


class VersionRegistry:
    def __init__(self, versions: list[APIVersion]) -> None:
        self._by_name = {v.name: v for v in versions}
        if BASE not in self._by_name:
            raise ValueError(f"the base version {BASE} must be served")

    def get(self, name: str) -> APIVersion | None:
        return self._by_name.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    @property
    def current(self) -> str:
        """The newest version that is not deprecated: what unversioned pages report."""
        live = [v.name for v in self._by_name.values() if v.deprecated_at is None]
        return (live or self.names)[-1]


def default_registry() -> VersionRegistry:
    return VersionRegistry([APIVersion(BASE)])


def rename_field(obj_type: str, old: str, new: str) -> VersionChange:
    """A ready-made change: a resource field renamed, in bodies and the OpenAPI schema."""

    def response(d: dict[str, Any]) -> dict[str, Any]:
        return {(new if k == old else k): v for k, v in d.items()}

    def openapi(spec: dict[str, Any]) -> None:
        for schema in spec.get("components", {}).get("schemas", {}).values():
            props = schema.get("properties", {})
            obj = props.get("object", {})
            if obj.get("const") == obj_type or obj.get("default") == obj_type:
                if old in props:
                    props[new] = props.pop(old)
                    req = schema.get("required", [])
                    schema["required"] = [new if r == old else r for r in req]

    return VersionChange(
        description=f"`{obj_type}.{old}` is renamed `{new}`",
        responses={obj_type: response},
        openapi=openapi,
    )
