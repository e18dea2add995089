from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query

from maintlink.api.auth import Admin, RuntimeDep
from maintlink.api.pagination import Cursor, PageSize, decode_cursor, page
from maintlink.api.schemas import (
    ERROR_RESPONSES,
    AttemptList,
    ConnectionWebhook,
    ConnectionWebhookWithSecret,
    EndpointCreate,
    EndpointSecret,
    EndpointUpdate,
    Event,
    Recover,
    RecoverResult,
    RotateSecret,
    WebhookConfig,
    WebhookEndpoint,
    WebhookEndpointList,
    WebhookEndpointWithSecret,
)
from maintlink.domain import deliveries as log
from maintlink.domain import endpoints as eps
from maintlink.domain.connections import get_connection
from maintlink.errors import MaintlinkError

router = APIRouter(tags=["webhooks"], responses=ERROR_RESPONSES)


@router.post("/webhook-endpoints", status_code=201, response_model=WebhookEndpointWithSecret,
             summary="Create a webhook endpoint")
async def create_endpoint(body: EndpointCreate, principal: Admin, rt: RuntimeDep) -> Any:
    """The answer holds the signing secret (`whsec_...`); `GET /{id}/secret` reads it again."""
    async with rt.engine.begin() as conn:
        row, secret = await eps.create_endpoint(
            conn, rt, account_id=principal.account_id, url=body.url, event_types=body.events,
            connection_id=body.connection_id, description=body.description,
            api_version=body.api_version, headers=body.headers,
            rate_limit_per_second=body.rate_limit_per_second,
        )
    return {**eps.endpoint_view(row), "secret": secret}


@router.get("/webhook-endpoints", response_model=WebhookEndpointList,
            summary="List webhook endpoints")
async def list_endpoints(
    principal: Admin, rt: RuntimeDep,
    connection_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["enabled", "disabled"] | None = None,
    cursor: Cursor = None, page_size: PageSize = 100,
) -> Any:
    after = decode_cursor("webhook_endpoints", cursor)
    async with rt.engine.connect() as conn:
        rows = await eps.list_endpoints(conn, principal.account_id, after=after,
                                        limit=page_size + 1, connection_id=connection_id,
                                        status=status)
    return page("webhook_endpoints", [eps.endpoint_view(r) for r in rows], page_size)


@router.get("/webhook-endpoints/{endpoint_id}", response_model=WebhookEndpoint,
            summary="Get a webhook endpoint")
async def get_endpoint(endpoint_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    async with rt.engine.connect() as conn:
        return eps.endpoint_view(await eps.get_endpoint(conn, principal.account_id, endpoint_id))


@router.patch("/webhook-endpoints/{endpoint_id}", response_model=WebhookEndpoint,
              summary="Update a webhook endpoint")
async def update_endpoint(
    endpoint_id: str, body: EndpointUpdate, principal: Admin, rt: RuntimeDep
) -> Any:
    """Only the fields sent change; send `null` to clear `events` (every type),
    `connection_id` (every connection), `description` or `rate_limit_per_second`."""
    changes = body.model_dump(exclude_unset=True)
    for key in ("url", "api_version", "headers"):
        if key in changes and changes[key] is None:
            raise MaintlinkError("VALIDATION_ERROR", f"'{key}' cannot be null.",
                                 details={"errors": [{"location": f"body.{key}",
                                                      "message": "cannot be null"}]})
    async with rt.engine.begin() as conn:
        row = await eps.update_endpoint(conn, rt, principal.account_id, endpoint_id, changes)
    return eps.endpoint_view(row)


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=204,
               summary="Delete a webhook endpoint")
async def delete_endpoint(endpoint_id: str, principal: Admin, rt: RuntimeDep) -> None:
    async with rt.engine.begin() as conn:
        await eps.delete_endpoint(conn, principal.account_id, endpoint_id)


@router.get("/webhook-endpoints/{endpoint_id}/secret", response_model=EndpointSecret,
            summary="Read an endpoint's signing secret")
async def get_secret(endpoint_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    async with rt.engine.connect() as conn:
        row = await eps.get_endpoint(conn, principal.account_id, endpoint_id)
    return {"object": "webhook_secret", "endpoint_id": row.id,
            "secret": eps.current_secret(rt, row),
            "previous_secret_expires_at": row.previous_secret_expires_at}


@router.post("/webhook-endpoints/{endpoint_id}/rotate-secret", response_model=EndpointSecret,
             summary="Rotate an endpoint's signing secret")
async def rotate_secret(
    endpoint_id: str, principal: Admin, rt: RuntimeDep,
    body: Annotated[RotateSecret | None, Body()] = None,
) -> Any:
    """The previous secret keeps signing beside the new one (both signatures in
    `webhook-signature`) for `overlap_hours` (default 24)."""
    hours = body.overlap_hours if body else None
    overlap = timedelta(hours=hours) if hours is not None else None
    async with rt.engine.begin() as conn:
        row, secret = await eps.rotate_secret(conn, rt, principal.account_id, endpoint_id,
                                              overlap)
    return {"object": "webhook_secret", "endpoint_id": row.id, "secret": secret,
            "previous_secret_expires_at": row.previous_secret_expires_at}


@router.post("/webhook-endpoints/{endpoint_id}/test", status_code=202, response_model=Event,
             summary="Send a webhook.test event")
async def send_test(endpoint_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    async with rt.engine.begin() as conn:
        event_id = await log.send_test(conn, principal.account_id, endpoint_id, rt.clock())
        return log.event_view(await log.get_event(conn, principal.account_id, event_id))


@router.post("/webhook-endpoints/{endpoint_id}/enable", response_model=WebhookEndpoint,
             summary="Enable a disabled endpoint")
async def enable(endpoint_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    """Deliveries that failed while it was disabled stay failed: re-queue them with
    `POST /{id}/recover`."""
    async with rt.engine.begin() as conn:
        return eps.endpoint_view(
            await eps.enable_endpoint(conn, rt, principal.account_id, endpoint_id))


@router.post("/webhook-endpoints/{endpoint_id}/recover", status_code=202,
             response_model=RecoverResult, summary="Re-send failed deliveries since a time")
async def recover(endpoint_id: str, body: Recover, principal: Admin, rt: RuntimeDep) -> Any:
    if body.since.tzinfo is None or (body.until is not None and body.until.tzinfo is None):
        raise MaintlinkError("VALIDATION_ERROR", "Times need a zone, e.g. 2026-01-01T00:00:00Z.",
                             details={"errors": [{"location": "body.since",
                                                  "message": "timezone required"}]})
    async with rt.engine.begin() as conn:
        count = await log.recover(conn, principal.account_id, endpoint_id, body.since,
                                  body.until, rt.clock())
    return {"object": "recovery", "endpoint_id": endpoint_id, "recovered": count}


@router.get("/webhook-endpoints/{endpoint_id}/attempts", response_model=AttemptList,
            summary="Delivery attempts of an endpoint")
async def endpoint_attempts(
    endpoint_id: str, principal: Admin, rt: RuntimeDep,
    status: Literal["succeeded", "failed"] | None = None,
    cursor: Cursor = None, page_size: PageSize = 100,
) -> Any:
    after = decode_cursor("attempts", cursor)
    async with rt.engine.connect() as conn:
        await eps.get_endpoint(conn, principal.account_id, endpoint_id)
        rows = await log.list_attempts(conn, principal.account_id, after=after,
                                       limit=page_size + 1, endpoint_id=endpoint_id,
                                       status=status)
    return page("attempts", [log.attempt_view(r) for r in rows], page_size)


# --- a connection's own webhook ----------------------------------------------------------

@router.get("/connections/{connection_id}/webhook", response_model=ConnectionWebhook,
            tags=["connections"], summary="A connection's own webhook")
async def get_connection_webhook(connection_id: str, principal: Admin, rt: RuntimeDep) -> Any:
    async with rt.engine.connect() as conn:
        await get_connection(conn, connection_id, account_id=principal.account_id)
        row = await log.endpoint_of_connection(conn, principal.account_id, connection_id)
    if row is None:
        raise MaintlinkError("NOT_FOUND", f"Connection '{connection_id}' has no webhook.")
    return {"object": "connection_webhook", "connection_id": connection_id,
            "endpoint": eps.endpoint_view(row)}


@router.put("/connections/{connection_id}/webhook", response_model=ConnectionWebhookWithSecret,
            tags=["connections"], summary="Set a connection's own webhook")
async def put_connection_webhook(
    connection_id: str, body: WebhookConfig, principal: Admin, rt: RuntimeDep
) -> Any:
    """Creates the connection's endpoint (the answer then holds its secret) or changes its
    URL and event types. Which events a connection sends is configured here."""
    async with rt.engine.begin() as conn:
        await get_connection(conn, connection_id, account_id=principal.account_id)
        row = await log.endpoint_of_connection(conn, principal.account_id, connection_id)
        secret = None
        if row is None:
            row, secret = await eps.create_endpoint(
                conn, rt, account_id=principal.account_id, url=body.url,
                event_types=body.events, connection_id=connection_id,
                description=f"Webhook of connection {connection_id}",
                managed_by_connection=True)
        else:
            row = await eps.update_endpoint(conn, rt, principal.account_id, row.id,
                                            {"url": body.url, "events": body.events})
    return {"object": "connection_webhook", "connection_id": connection_id,
            "endpoint": eps.endpoint_view(row), "secret": secret}


@router.delete("/connections/{connection_id}/webhook", status_code=204, tags=["connections"],
               summary="Remove a connection's own webhook")
async def delete_connection_webhook(connection_id: str, principal: Admin, rt: RuntimeDep) -> None:
    async with rt.engine.begin() as conn:
        await get_connection(conn, connection_id, account_id=principal.account_id)
        row = await log.endpoint_of_connection(conn, principal.account_id, connection_id)
        if row is None:
            raise MaintlinkError("NOT_FOUND", f"Connection '{connection_id}' has no webhook.")
        await eps.delete_endpoint(conn, principal.account_id, row.id)
