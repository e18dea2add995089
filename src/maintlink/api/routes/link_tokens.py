"""Link tokens: start the hosted connection flow, and exchange its one-time code."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from maintlink.api.auth import Admin, RuntimeDep
from maintlink.api.schemas import ERROR_RESPONSES, Strict
from maintlink.domain import link_tokens as links

router = APIRouter(tags=["link tokens"], responses=ERROR_RESPONSES)


class LinkTokenCreate(Strict):
    customer_id: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$",
        description="Your own id for the customer. Required unless `connection_id` is given "
                    "(then it must match the connection's, or be left out).")
    integration: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Fix the system (the picker is skipped); absent: the customer picks")
    redirect_uri: str = Field(
        max_length=2048,
        description="Where the browser returns with `?code=...&state=...`: https, or http "
                    "on localhost / loopback for development. Matched exactly.")
    allowed_origin: str | None = Field(
        default=None, max_length=300,
        description="The one origin allowed to embed the flow in an iframe; the code is "
                    "posted to it with `postMessage`")
    state: str | None = Field(
        default=None, max_length=500, description="Passed back untouched on the redirect")
    connection_id: str | None = Field(
        default=None, max_length=40,
        description="Reconnect mode: reauthorize this connection (same id, data kept, "
                    "new token)")
    webhook_url: str | None = Field(
        default=None, max_length=2048,
        description="The connection's own webhook endpoint (public https:// URL)")
    webhook_events: list[str] | None = Field(
        default=None, description="Event types for that endpoint; absent: every type")
    collect_webhook_url: bool = Field(
        default=False,
        description="Let the customer enter a webhook URL in the flow (when `webhook_url` "
                    "is not set)")
    expires_in: int | None = Field(
        default=None, ge=60, le=604_800,
        description="Seconds the token stays valid: default 1800 (900 in reconnect mode), "
                    "at most 7 days")


class LinkTokenCreated(BaseModel):
    object: Literal["link_token"] = "link_token"
    id: str
    link_token: str = Field(description="`lt_...`: single use; shown this once")
    url: str = Field(description="Send the customer here (or embed it with "
                                 "`maintlink-connect.js`)")
    expires_at: datetime
    mode: Literal["create", "reconnect"]
    customer_id: str
    integration: str | None = None
    connection_id: str | None = None


class LinkToken(BaseModel):
    object: Literal["link_token"] = "link_token"
    id: str
    status: Literal["open", "used", "locked", "revoked", "expired"]
    mode: Literal["create", "reconnect"]
    customer_id: str
    integration: str | None = None
    connection_id: str | None = Field(
        default=None, description="The connection reconnected, or the one the flow created")
    redirect_uri: str
    allowed_origin: str | None = None
    webhook_url: str | None = None
    webhook_events: list[str] | None = None
    collect_webhook_url: bool
    failed_attempts: int
    expires_at: datetime
    created_at: datetime
    used_at: datetime | None = None


class CodeExchange(Strict):
    code: str = Field(min_length=1, max_length=200, description="The `code` from the redirect "
                                                                "or `onSuccess`")


class Exchanged(BaseModel):
    object: Literal["link_exchange"] = "link_exchange"
    connection_id: str
    token: str = Field(description="The connection's bearer token (`mlc_...`); store it")
    customer_id: str
    integration: str
    mode: Literal["create", "reconnect"]
    webhook_endpoint_id: str | None = Field(
        default=None, description="The connection's own webhook endpoint, if the flow set "
                                  "one; read its secret at /webhook-endpoints/{id}/secret")


def public_base(request: Request, public_url: str | None) -> str:
    """How browsers reach this server: `MAINTLINK_PUBLIC_URL`, else this request's base."""
    return (public_url or str(request.base_url)).rstrip("/")


@router.post("/link-tokens", status_code=201, response_model=LinkTokenCreated,
             summary="Create a link token")
async def create_link_token(
    body: LinkTokenCreate, principal: Admin, rt: RuntimeDep, request: Request
) -> Any:
    """Starts the hosted connection flow for one customer. Send the customer to `url`; on
    success their browser comes back to `redirect_uri` with a one-time `code` to exchange
    at `POST /link-tokens/exchange`."""
    spec = links.LinkTokenRequest(**body.model_dump())
    async with rt.engine.begin() as conn:
        row, token = await links.create_link_token(
            conn, rt, account_id=principal.account_id, request=spec)
    return {
        "object": "link_token", "id": row.id, "link_token": token,
        "url": f"{public_base(request, rt.settings.public_url)}/connect/{token}",
        "expires_at": row.expires_at, "mode": row.mode,
        "customer_id": row.customer_external_id, "integration": row.integration,
        "connection_id": row.connection_id,
    }


@router.post("/link-tokens/exchange", response_model=Exchanged,
             summary="Exchange a connection flow's code")
async def exchange(body: CodeExchange, principal: Admin, rt: RuntimeDep) -> Any:
    """Codes are single use and expire after 10 minutes. In reconnect mode the token is the
    connection's new one (the previous token stopped working when the customer finished)."""
    return await links.exchange_code(rt, principal.account_id, body.code.strip())


@router.get("/link-tokens/{link_token_id}", response_model=LinkToken,
            summary="Get a link token")
async def get_link_token(link_token_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    async with rt.engine.connect() as conn:
        row = await links.get_link_token(conn, principal.account_id, link_token_id)
    return links.link_token_view(row, rt.clock())


@router.post("/link-tokens/{link_token_id}/revoke", response_model=LinkToken,
             summary="Revoke a link token")
async def revoke_link_token(link_token_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    """The link stops working at once; revoking a used or expired token changes nothing."""
    async with rt.engine.begin() as conn:
        row = await links.revoke_link_token(conn, rt, principal.account_id, link_token_id)
    return links.link_token_view(row, rt.clock())
