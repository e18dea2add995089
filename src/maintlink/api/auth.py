"""Bearer authentication and per-token rate limits, as FastAPI dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from maintlink.api.ratelimit import RateLimiter
from maintlink.domain import connections as conns
from maintlink.domain.accounts import ADMIN_KEY_PREFIX, AdminPrincipal, authenticate_admin_key
from maintlink.errors import MaintlinkError
from maintlink.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="An admin key `mlk_...` or a connection "
                     "token `mlc_...`")


@dataclass(frozen=True)
class ConnectionPrincipal:
    account_id: str
    connection_id: str
    status: str


Principal = AdminPrincipal | ConnectionPrincipal


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def _limiter(request: Request) -> RateLimiter:
    return request.app.state.rate_limiter  # type: ignore[no-any-return]


def _token(creds: HTTPAuthorizationCredentials | None) -> str:
    if creds is None or not creds.credentials:
        raise MaintlinkError(
            "AUTHENTICATION_FAILED", "No bearer token: send `Authorization: Bearer <token>`."
        )
    return creds.credentials.strip()


async def _admin(rt: Runtime, token: str) -> AdminPrincipal:
    async with rt.engine.begin() as conn:
        principal = await authenticate_admin_key(conn, token)
    if principal is None:
        raise MaintlinkError("AUTHENTICATION_FAILED", "The admin key is unknown or revoked.")
    return principal


async def _connection(
    rt: Runtime, token: str, *, allow_reauth: bool, request: Request
) -> ConnectionPrincipal:
    async with rt.engine.connect() as conn:
        row = await conns.authenticate_token(conn, token)
    if row is None:
        raise MaintlinkError(
            "AUTHENTICATION_FAILED", "The connection token is unknown or was rotated."
        )
    _attribute(request, row.account_id, row.id, None)  # refusals below are logged too
    if row.status == conns.Status.DISCONNECTED:
        raise MaintlinkError(
            "CONNECTION_DISCONNECTED", "This connection was disconnected; its token is void.",
            details={"connection_id": row.id},
        )
    if row.status == conns.Status.REAUTH_REQUIRED and not allow_reauth:
        raise MaintlinkError(
            "CONNECTION_REAUTH_REQUIRED",
            "The maintenance system rejected this connection's credentials; "
            "the customer must reconnect.",
            details={"connection_id": row.id,
                     "reconnect": conns.reconnect_details(row.id, row.status_reason)},
        )
    return ConnectionPrincipal(row.account_id, row.id, row.status)


def _attribute(
    request: Request, account_id: str, connection_id: str | None, key_id: str | None
) -> None:
    """Who made the request, for the request log (read by the middleware afterwards)."""
    state = request.state
    state.account_id, state.connection_id, state.key_id = account_id, connection_id, key_id


async def _limit(request: Request, response: Response, principal: Principal) -> None:
    rt = runtime(request)
    if isinstance(principal, AdminPrincipal):
        about = request.path_params.get("connection_id") \
            or request.query_params.get("connection_id")
        _attribute(request, principal.account_id, about, principal.key_id)
        bucket, limit = f"k:{principal.key_id}", rt.settings.rate_limit_admin_per_minute
    else:
        bucket, limit = f"c:{principal.connection_id}", rt.settings.rate_limit_connection_per_minute
    budget = await _limiter(request).check(bucket, limit)
    response.headers.update(budget.headers())


Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def require_admin(request: Request, response: Response, creds: Bearer) -> AdminPrincipal:
    token = _token(creds)
    if not token.startswith(ADMIN_KEY_PREFIX + "_"):
        if token.startswith(conns.CONNECTION_TOKEN_PREFIX + "_"):
            raise MaintlinkError(
                "FORBIDDEN", "This route needs an admin key (`mlk_...`), not a connection token."
            )
        raise MaintlinkError("AUTHENTICATION_FAILED", "The admin key is unknown or revoked.")
    principal = await _admin(runtime(request), token)
    await _limit(request, response, principal)
    return principal


async def _require_connection(
    request: Request, response: Response, creds: Bearer, *, allow_reauth: bool
) -> ConnectionPrincipal:
    token = _token(creds)
    if not token.startswith(conns.CONNECTION_TOKEN_PREFIX + "_"):
        if token.startswith(ADMIN_KEY_PREFIX + "_"):
            raise MaintlinkError(
                "FORBIDDEN", "This route needs a connection token (`mlc_...`), not an admin key."
            )
        raise MaintlinkError("AUTHENTICATION_FAILED", "The connection token is unknown.")
    principal = await _connection(runtime(request), token, allow_reauth=allow_reauth,
                                  request=request)
    await _limit(request, response, principal)
    return principal


async def require_connection(
    request: Request, response: Response, creds: Bearer
) -> ConnectionPrincipal:
    return await _require_connection(request, response, creds, allow_reauth=False)


async def require_any(request: Request, response: Response, creds: Bearer) -> Principal:
    """Admin key, or a connection token (even one needing reauthorization)."""
    token = _token(creds)
    if token.startswith(conns.CONNECTION_TOKEN_PREFIX + "_"):
        return await _require_connection(request, response, creds, allow_reauth=True)
    return await require_admin(request, response, creds)


Admin = Annotated[AdminPrincipal, Depends(require_admin)]
ConnectionAuth = Annotated[ConnectionPrincipal, Depends(require_connection)]
AnyAuth = Annotated[Principal, Depends(require_any)]
RuntimeDep = Annotated[Runtime, Depends(runtime)]
