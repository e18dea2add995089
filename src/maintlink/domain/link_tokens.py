"""Link tokens: how the hosted connection flow starts, what bounds it, and how it ends.

A developer's backend creates a link token with its admin key. Everything the browser could
tamper with is bound to the token here, server-side: account, customer, integration, mode
(create or reconnect a given connection), the exact redirect URI, the one origin allowed to
embed the flow, the webhook. The customer's browser carries the token to `/connect/{token}`;
on success it gets a short-lived one-time code, which only the developer's backend (with an
admin key of the same account) can trade for the connection id and token. So the connection
token never travels through a browser or a URL.

Only hashes of link tokens and codes are stored. The connection token waits, encrypted, in
the code's row until the exchange erases it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import Row, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.config import Settings
from maintlink.connectors.base import AccountInfo, Connector
from maintlink.connectors.oauth2 import pkce_pair
from maintlink.connectors.registry import CONNECTORS, get_connector_class
from maintlink.crypto import KEY_FILE_NAME
from maintlink.domain import connections as conns
from maintlink.domain import endpoints
from maintlink.errors import MaintlinkError
from maintlink.ids import hash_token, new_id, new_token
from maintlink.runtime import Runtime
from maintlink.store.tables import accounts, link_codes, link_tokens, webhook_endpoints

LINK_TOKEN_PREFIX = "lt"
LINK_CODE_PREFIX = "lc"
CREATE_TTL = timedelta(minutes=30)
RECONNECT_TTL = timedelta(minutes=15)
MIN_TTL = timedelta(minutes=1)
MAX_TTL = timedelta(days=7)
# Rows stay this long after expiry so late visitors get "expired", not "unknown".
RETENTION = timedelta(days=7)

# The simulators' demo OAuth clients, so that `maintlink serve` connects out of the box.
# Used only when MAINTLINK_ENVIRONMENT=development and nothing else is configured.
DEV_OAUTH_CLIENTS: dict[str, dict[str, str]] = {
    "sap_s4hana": {"client_id": "sap-demo-client", "client_secret": "sap-demo-secret"},
}
# Query keys the flow appends to the redirect URI; the developer's own must not clash.
RESERVED_REDIRECT_KEYS = frozenset({"code", "state", "error", "error_description"})


class Mode(StrEnum):
    CREATE = "create"
    RECONNECT = "reconnect"


class LinkStatus(StrEnum):
    OPEN = "open"
    USED = "used"
    LOCKED = "locked"  # too many failed credential checks
    REVOKED = "revoked"
    EXPIRED = "expired"  # never stored: an open token past `expires_at`


# --- URLs the developer binds ----------------------------------------------------------------

def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split(value: str, field: str) -> Any:
    def bad(reason: str) -> MaintlinkError:
        return MaintlinkError("INVALID_REDIRECT_URI", f"{field} {reason}.",
                              details={"field": field})

    if len(value) > 2048 or any(c in value for c in "\x00\r\n\t\\ "):
        raise bad("must be a URL of at most 2048 characters without spaces or backslashes")
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise bad("has an invalid port") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in ("https", "http") or not host:
        raise bad("must be an absolute https:// URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise bad("must not carry credentials")
    if parts.fragment or "#" in value:
        raise bad("must not have a fragment")
    if scheme == "http" and not _is_loopback(host):
        raise bad("must use https (plain http is allowed only on localhost and loopback "
                  "addresses, for development)")
    return parts


def check_redirect_uri(value: str) -> str:
    """The exact URI the browser returns to; stored as given, so matching stays exact."""
    parts = _split(value, "redirect_uri")
    clash = RESERVED_REDIRECT_KEYS & {k for k, _ in parse_qsl(parts.query)}
    if clash:
        raise MaintlinkError(
            "INVALID_REDIRECT_URI",
            f"redirect_uri must not already carry {', '.join(sorted(clash))}: "
            "the flow adds them.", details={"field": "redirect_uri"})
    return value


def check_origin(value: str) -> str:
    """An origin as browsers serialize it (`https://app.example.com[:port]`), compared
    exactly with `MessageEvent.origin` and used in `frame-ancestors`."""
    parts = _split(value.strip(), "allowed_origin")
    if parts.path not in ("", "/") or parts.query:
        raise MaintlinkError("INVALID_REDIRECT_URI",
                             "allowed_origin must be an origin only: scheme, host and port.",
                             details={"field": "allowed_origin"})
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default = {"https": 443, "http": 80}[scheme]
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{scheme}://{host}{port}"


def with_query(uri: str, params: Mapping[str, str | None]) -> str:
    """`uri` with `params` appended to its query, keeping the developer's own keys."""
    parts = urlsplit(uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query and extra else (parts.query or extra)
    return urlunsplit(parts._replace(query=query))


# --- integrations the flow can offer -----------------------------------------------------------

@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    client_secret: str


def oauth_client(settings: Settings, slug: str) -> OAuthClient | None:
    config = settings.oauth_clients.get(slug)
    if config is None and settings.environment == "development":
        config = DEV_OAUTH_CLIENTS.get(slug)
    if not config or not config.get("client_id"):
        return None
    return OAuthClient(config["client_id"], config.get("client_secret", ""))


def is_connectable(settings: Settings, cls: type[Connector]) -> bool:
    """OAuth2 systems need a client registered with them; the others need nothing."""
    return cls.auth_type != "oauth2" or oauth_client(settings, cls.slug) is not None


def flow_integrations(settings: Settings) -> list[type[Connector]]:
    found = [cls for cls in CONNECTORS.values() if is_connectable(settings, cls)]
    return sorted(found, key=lambda cls: cls.name.lower())


def connectable_class(settings: Settings, slug: str) -> type[Connector]:
    cls = get_connector_class(slug)
    if not is_connectable(settings, cls):
        raise MaintlinkError(
            "INTEGRATION_NOT_CONFIGURED",
            f"{cls.name} signs in with OAuth2 and this server has no OAuth client for it: "
            f"add one for '{slug}' to MAINTLINK_OAUTH_CLIENTS.",
        )
    return cls


# --- keys derived from the master secret -------------------------------------------------------

@lru_cache(maxsize=64)
def _derive(material: str, purpose: str) -> bytes:
    newest = material.split(",")[0].strip().encode()
    return hmac.new(newest, b"maintlink/" + purpose.encode(), hashlib.sha256).digest()


def derived_key(settings: Settings, purpose: str) -> bytes:
    """A MAC key for one purpose, from the newest master key (the cipher keeps its keys
    private, so they are read where the cipher reads them). A key rotation only voids
    in-flight forms and the re-display of unexchanged codes."""
    material = settings.secret_key or (settings.data_dir / KEY_FILE_NAME).read_text()
    return _derive(material, purpose)


def _mac(settings: Settings, purpose: str, message: str) -> str:
    digest = hmac.new(derived_key(settings, purpose), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_token(settings: Settings, link_id: str) -> str:
    """The hidden form field that proves a POST comes from a page this server rendered for
    this link token (no cookie: third-party cookies are blocked inside iframes)."""
    return _mac(settings, "connect-csrf", link_id)


def csrf_ok(settings: Settings, link_id: str, value: str | None) -> bool:
    return bool(value) and hmac.compare_digest(csrf_token(settings, link_id), str(value))


def code_for(settings: Settings, code_id: str) -> str:
    """Codes are derived from their row id, so the store holds only their hash and the
    success page can still show the code again until it is exchanged."""
    return f"{LINK_CODE_PREFIX}_{_mac(settings, 'link-code', code_id)}"


# --- link tokens ----------------------------------------------------------------------------

@dataclass(frozen=True)
class LinkTokenRequest:
    redirect_uri: str
    customer_id: str | None = None
    integration: str | None = None
    connection_id: str | None = None
    allowed_origin: str | None = None
    state: str | None = None
    webhook_url: str | None = None
    webhook_events: Sequence[str] | None = None
    collect_webhook_url: bool = False
    expires_in: int | None = None  # seconds


def _invalid(location: str, message: str) -> MaintlinkError:
    return MaintlinkError("VALIDATION_ERROR", f"{location}: {message}",
                          details={"errors": [{"location": f"body.{location}",
                                               "message": message}]})


async def create_link_token(
    conn: AsyncConnection, rt: Runtime, *, account_id: str, request: LinkTokenRequest
) -> tuple[Row[Any], str]:
    """Returns (row, token); the token `lt_...` is shown once."""
    redirect_uri = check_redirect_uri(request.redirect_uri)
    origin = check_origin(request.allowed_origin) if request.allowed_origin else None
    webhook_url = endpoints.check_url(rt, request.webhook_url) if request.webhook_url else None
    events = endpoints.check_events(request.webhook_events)
    if events is not None and webhook_url is None and not request.collect_webhook_url:
        raise _invalid("webhook_events", "needs webhook_url or collect_webhook_url")
    integration = request.integration
    connection_id = None
    if request.connection_id:
        target = await conns.get_connection(conn, request.connection_id, account_id=account_id)
        if target.status == conns.Status.DISCONNECTED:
            raise MaintlinkError(
                "CONNECTION_NOT_ACTIVE",
                "A disconnected connection cannot be reconnected; create a new connection.")
        if integration and integration != target.integration:
            raise _invalid("integration", f"the connection uses '{target.integration}'")
        if request.customer_id and request.customer_id != target.customer_external_id:
            raise _invalid("customer_id", "the connection belongs to another customer")
        integration, customer, mode = target.integration, target.customer_external_id, \
            Mode.RECONNECT
        connection_id = target.id
    elif request.customer_id:
        customer, mode = request.customer_id, Mode.CREATE
    else:
        raise _invalid("customer_id", "required (unless connection_id is given)")
    if integration:
        connectable_class(rt.settings, integration)
    ttl = (timedelta(seconds=request.expires_in) if request.expires_in
           else RECONNECT_TTL if mode is Mode.RECONNECT else CREATE_TTL)
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise _invalid("expires_in", "must be between 60 and 604800 seconds")

    now = rt.clock()
    await purge(conn, now)
    token = new_token(LINK_TOKEN_PREFIX)
    link_id = new_id("lnk")
    await conn.execute(link_tokens.insert().values(
        id=link_id, account_id=account_id, token_hash=hash_token(token),
        customer_external_id=customer, integration=integration, mode=mode,
        connection_id=connection_id, redirect_uri=redirect_uri, allowed_origin=origin,
        state=request.state, webhook_url=webhook_url, webhook_events=events,
        collect_webhook_url=1 if request.collect_webhook_url else 0,
        status=LinkStatus.OPEN, failed_attempts=0, expires_at=now + ttl, created_at=now,
    ))
    return await get_link_token(conn, account_id, link_id), token


async def get_link_token(conn: AsyncConnection, account_id: str, link_id: str) -> Row[Any]:
    row = (await conn.execute(select(link_tokens).where(
        link_tokens.c.id == link_id, link_tokens.c.account_id == account_id))).first()
    if row is None:
        raise MaintlinkError("NOT_FOUND", f"No link token '{link_id}'.")
    return row


async def revoke_link_token(
    conn: AsyncConnection, rt: Runtime, account_id: str, link_id: str
) -> Row[Any]:
    """Closes an open token at once; revoking a closed one changes nothing."""
    await get_link_token(conn, account_id, link_id)
    await conn.execute(update(link_tokens).where(
        link_tokens.c.id == link_id, link_tokens.c.status == LinkStatus.OPEN,
    ).values(status=LinkStatus.REVOKED, revoked_at=rt.clock(), oauth_state_hash=None,
             oauth_pending_encrypted=None))
    return await get_link_token(conn, account_id, link_id)


def status_of(row: Row[Any], now: datetime) -> LinkStatus:
    if row.status == LinkStatus.OPEN and row.expires_at <= now:
        return LinkStatus.EXPIRED
    return LinkStatus(row.status)


def link_token_view(row: Row[Any], now: datetime) -> dict[str, Any]:
    return {
        "object": "link_token",
        "id": row.id,
        "status": status_of(row, now).value,
        "mode": row.mode,
        "customer_id": row.customer_external_id,
        "integration": row.integration,
        "connection_id": row.connection_id or row.result_connection_id,
        "redirect_uri": row.redirect_uri,
        "allowed_origin": row.allowed_origin,
        "webhook_url": row.webhook_url,
        "webhook_events": row.webhook_events,
        "collect_webhook_url": bool(row.collect_webhook_url),
        "failed_attempts": row.failed_attempts,
        "expires_at": row.expires_at,
        "created_at": row.created_at,
        "used_at": row.used_at,
    }


async def purge(conn: AsyncConnection, now: datetime) -> None:
    """Erase waiting tokens of expired codes, and forget long-dead rows."""
    await conn.execute(update(link_codes).where(
        link_codes.c.expires_at <= now, link_codes.c.token_encrypted.is_not(None),
    ).values(token_encrypted=None))
    old = select(link_tokens.c.id).where(link_tokens.c.expires_at <= now - RETENTION)
    await conn.execute(delete(link_codes).where(link_codes.c.link_token_id.in_(old)))
    await conn.execute(delete(link_tokens).where(link_tokens.c.expires_at <= now - RETENTION))


# --- the hosted flow ------------------------------------------------------------------------

_CLOSED = {
    LinkStatus.EXPIRED: ("LINK_TOKEN_EXPIRED", "This connection link has expired."),
    LinkStatus.USED: ("LINK_TOKEN_USED", "This connection link was already used."),
    LinkStatus.LOCKED: ("LINK_TOKEN_LOCKED",
                        "This connection link was closed after too many failed attempts."),
    LinkStatus.REVOKED: ("LINK_TOKEN_INVALID", "This connection link was revoked."),
}


async def find_link(conn: AsyncConnection, token: str) -> Row[Any] | None:
    if not token.startswith(LINK_TOKEN_PREFIX + "_") or len(token) > 100:
        return None
    query = select(link_tokens, accounts.c.name.label("account_name")).join(
        accounts, accounts.c.id == link_tokens.c.account_id,
    ).where(link_tokens.c.token_hash == hash_token(token))
    return (await conn.execute(query)).first()


def closed_error(status: LinkStatus) -> MaintlinkError:
    code, message = _CLOSED.get(status, ("LINK_TOKEN_INVALID", "This link is not valid."))
    return MaintlinkError(code, message, details={"status": status.value})


def ensure_open(row: Row[Any] | None, now: datetime) -> Row[Any]:
    if row is None:
        raise MaintlinkError("LINK_TOKEN_INVALID", "This connection link is not valid.")
    status = status_of(row, now)
    if status is not LinkStatus.OPEN:
        raise closed_error(status)
    return row


async def record_failure(rt: Runtime, link_id: str) -> int:
    """Count a failed credential check; returns the attempts left (0: now locked). Counted
    for every failed live check, so a link cannot be used to probe addresses at will."""
    limit = rt.settings.link_token_max_failed_attempts
    async with rt.engine.begin() as conn:
        await conn.execute(update(link_tokens).where(
            link_tokens.c.id == link_id, link_tokens.c.status == LinkStatus.OPEN,
        ).values(failed_attempts=link_tokens.c.failed_attempts + 1))
        failed = (await conn.execute(select(link_tokens.c.failed_attempts).where(
            link_tokens.c.id == link_id))).scalar_one()
        if failed >= limit:
            await conn.execute(update(link_tokens).where(
                link_tokens.c.id == link_id, link_tokens.c.status == LinkStatus.OPEN,
            ).values(status=LinkStatus.LOCKED, oauth_state_hash=None,
                     oauth_pending_encrypted=None))
    return max(0, limit - int(failed))


async def _managed_endpoint(conn: AsyncConnection, connection_id: str) -> Row[Any] | None:
    return (await conn.execute(select(webhook_endpoints).where(
        webhook_endpoints.c.connection_id == connection_id,
        webhook_endpoints.c.managed_by_connection == 1,
    ).order_by(webhook_endpoints.c.id))).first()


async def _set_webhook(
    conn: AsyncConnection, rt: Runtime, link: Row[Any], connection_id: str, url: str,
) -> str:
    """Reconnect mode: the connection's own endpoint takes the link's webhook."""
    current = await _managed_endpoint(conn, connection_id)
    if current is None:
        row, _ = await endpoints.create_endpoint(
            conn, rt, account_id=link.account_id, url=url, event_types=link.webhook_events,
            connection_id=connection_id, managed_by_connection=True,
            description=f"Webhook of connection {connection_id}")
        return str(row.id)
    changes: dict[str, Any] = {"url": url}
    if link.webhook_events is not None:  # else the endpoint keeps its own choice
        changes["events"] = link.webhook_events
    await endpoints.update_endpoint(conn, rt, link.account_id, current.id, changes)
    return str(current.id)


async def complete(
    conn: AsyncConnection,
    rt: Runtime,
    link: Row[Any],
    *,
    integration: str,
    credentials: Mapping[str, Any],
    account_info: AccountInfo,
    connection_settings: Mapping[str, Any],
    webhook_url: str | None = None,
) -> str:
    """Claim the link token, create or reauthorize the connection and issue the code, all
    in the caller's transaction. Raises LINK_TOKEN_* if another request claimed it first."""
    now = rt.clock()
    claimed = await conn.execute(update(link_tokens).where(
        link_tokens.c.id == link.id, link_tokens.c.status == LinkStatus.OPEN,
        link_tokens.c.expires_at > now,
    ).values(status=LinkStatus.USED, used_at=now, oauth_state_hash=None,
             oauth_pending_encrypted=None))
    if claimed.rowcount != 1:
        current = (await conn.execute(select(link_tokens).where(
            link_tokens.c.id == link.id))).first()
        ensure_open(current, now)
        raise MaintlinkError("LINK_TOKEN_USED")
    url = webhook_url or link.webhook_url
    endpoint_id: str | None = None
    if link.mode == Mode.RECONNECT:
        row, token = await conns.reauthorize(
            conn, rt, account_id=link.account_id, connection_id=link.connection_id,
            credentials=credentials, account_info=account_info)
        if url:
            endpoint_id = await _set_webhook(conn, rt, link, row.id, url)
    else:
        row, token = await conns.create_connection(
            conn, rt, account_id=link.account_id,
            customer_external_id=link.customer_external_id, integration=integration,
            credentials=credentials, settings=connection_settings, account_info=account_info,
            webhook={"url": url, "events": link.webhook_events} if url else None)
        if url:
            endpoint = await _managed_endpoint(conn, row.id)
            endpoint_id = endpoint.id if endpoint is not None else None
    code_id = new_id("lcd")
    code = code_for(rt.settings, code_id)
    await conn.execute(link_codes.insert().values(
        id=code_id, account_id=link.account_id, link_token_id=link.id,
        code_hash=hash_token(code), connection_id=row.id, mode=link.mode,
        token_encrypted=rt.cipher.encrypt(token.encode()), webhook_endpoint_id=endpoint_id,
        expires_at=now + timedelta(seconds=rt.settings.link_code_ttl_seconds), created_at=now,
    ))
    await conn.execute(update(link_tokens).where(link_tokens.c.id == link.id)
                       .values(result_connection_id=row.id))
    return code


@dataclass(frozen=True)
class Outcome:
    """What the success page shows: the code only while it can still be exchanged."""

    connection: Row[Any]
    code: str | None


async def outcome(conn: AsyncConnection, rt: Runtime, link: Row[Any]) -> Outcome | None:
    if link.status != LinkStatus.USED:
        return None
    row = (await conn.execute(select(link_codes).where(
        link_codes.c.link_token_id == link.id))).first()
    if row is None:
        return None
    connection = await conns.get_connection(conn, row.connection_id)
    code: str | None = None
    if row.exchanged_at is None and row.expires_at > rt.clock():
        code = code_for(rt.settings, row.id)
        if hash_token(code) != row.code_hash:  # the master key was rotated meanwhile
            code = None
    return Outcome(connection, code)


async def begin_oauth(
    conn: AsyncConnection, rt: Runtime, link: Row[Any], pending: Mapping[str, Any],
) -> tuple[str, str]:
    """Start an authorization for this link token; returns (state, PKCE challenge). The
    verifier and `pending` (form values, the link token itself) stay server-side,
    encrypted; a newer start replaces an older one."""
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    blob = rt.cipher.encrypt_json({**pending, "code_verifier": verifier})
    await conn.execute(update(link_tokens).where(
        link_tokens.c.id == link.id, link_tokens.c.status == LinkStatus.OPEN,
    ).values(oauth_state_hash=hash_token(state), oauth_pending_encrypted=blob,
             oauth_started_at=rt.clock()))
    return state, challenge


async def take_oauth(rt: Runtime, state: str) -> tuple[Row[Any], dict[str, Any]] | None:
    """The link token and pending values of an authorization, once: the state is erased."""
    if not state or len(state) > 200:
        return None
    async with rt.engine.begin() as conn:
        row = (await conn.execute(
            select(link_tokens, accounts.c.name.label("account_name"))
            .join(accounts, accounts.c.id == link_tokens.c.account_id)
            .where(link_tokens.c.oauth_state_hash == hash_token(state)))).first()
        if row is None or row.oauth_pending_encrypted is None:
            return None
        erased = await conn.execute(update(link_tokens).where(
            link_tokens.c.id == row.id, link_tokens.c.oauth_state_hash == hash_token(state),
        ).values(oauth_state_hash=None, oauth_pending_encrypted=None))
        if erased.rowcount != 1:  # a concurrent callback took it
            return None
    return row, dict(rt.cipher.decrypt_json(row.oauth_pending_encrypted))


# --- the exchange ---------------------------------------------------------------------------

async def exchange_code(rt: Runtime, account_id: str, code: str) -> dict[str, Any]:
    """Trade a code for the connection id and token, once. Another account's code reads as
    unknown. An expired code's waiting token is erased before the error is raised."""
    now = rt.clock()
    expired = False
    async with rt.engine.begin() as conn:
        await purge(conn, now)
        row = (await conn.execute(select(link_codes).where(
            link_codes.c.code_hash == hash_token(code)))).first()
        if row is None or row.account_id != account_id:
            raise MaintlinkError("LINK_CODE_INVALID", "Unknown code.")
        if row.exchanged_at is not None:
            raise MaintlinkError("LINK_CODE_INVALID", "This code was already exchanged.")
        if row.expires_at <= now or row.token_encrypted is None:
            expired = True
        else:
            claimed = await conn.execute(update(link_codes).where(
                link_codes.c.id == row.id, link_codes.c.exchanged_at.is_(None),
            ).values(exchanged_at=now, token_encrypted=None))
            if claimed.rowcount != 1:
                raise MaintlinkError("LINK_CODE_INVALID", "This code was already exchanged.")
            token = rt.cipher.decrypt(row.token_encrypted).decode()
            connection = await conns.get_connection(conn, row.connection_id)
    if expired:
        raise MaintlinkError("LINK_CODE_EXPIRED", details={"connection_id": row.connection_id})
    if connection.token_hash != hash_token(token):
        raise MaintlinkError(
            "LINK_CODE_INVALID",
            "The connection's token was replaced since this code was issued; issue a new one "
            f"with POST /api/v1/connections/{connection.id}/token.",
            details={"connection_id": connection.id})
    return {
        "object": "link_exchange",
        "connection_id": connection.id,
        "token": token,
        "customer_id": connection.customer_external_id,
        "integration": connection.integration,
        "mode": row.mode,
        "webhook_endpoint_id": row.webhook_endpoint_id,
    }
