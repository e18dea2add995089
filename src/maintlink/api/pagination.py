"""Opaque cursors: base64url of the last id seen, bound to the list they came from."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import orjson
from fastapi import Query

from maintlink.errors import MaintlinkError

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100

PageSize = Annotated[
    int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"1 to {MAX_PAGE_SIZE}; default 100")
]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page")
]


def encode_cursor(kind: str, after: str) -> str:
    raw = orjson.dumps({"k": kind, "a": after})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if isinstance(data, dict) and data.get("k") == kind and isinstance(data.get("a"), str):
            return str(data["a"])
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        pass
    raise MaintlinkError("INVALID_CURSOR", "The cursor is malformed or belongs to another list.")


def page(kind: str, items: list[dict[str, Any]], page_size: int) -> dict[str, Any]:
    """`items` was fetched with limit page_size + 1, so one extra row means more."""
    more = len(items) > page_size
    items = items[:page_size]
    return {
        "object": "list",
        "data": items,
        "next_cursor": encode_cursor(kind, items[-1]["id"]) if more and items else None,
    }
