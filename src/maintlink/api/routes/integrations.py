from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from maintlink.api.auth import Admin
from maintlink.api.schemas import ERROR_RESPONSES, Integration, IntegrationList
from maintlink.connectors.registry import CONNECTORS, describe
from maintlink.errors import MaintlinkError

router = APIRouter(tags=["integrations"], responses=ERROR_RESPONSES)


@router.get("/integrations", response_model=IntegrationList, summary="List integrations")
async def list_integrations(_: Admin) -> dict[str, Any]:
    """Every maintenance system maintlink can connect, with the credential fields its
    connection form needs."""
    return {
        "object": "list",
        "data": [describe(cls) for cls in CONNECTORS.values()],
        "next_cursor": None,
    }


@router.get("/integrations/{slug}", response_model=Integration, summary="Get an integration")
async def get_integration(slug: str, _: Admin) -> dict[str, Any]:
    cls = CONNECTORS.get(slug)
    if cls is None:
        raise MaintlinkError("NOT_FOUND", f"No integration '{slug}'.")
    return describe(cls)
