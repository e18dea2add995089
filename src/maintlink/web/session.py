"""Dashboard sign-in sessions and CSRF tokens.

The session is a signed cookie holding the admin key's id, the account id, an expiry and a
random nonce, never the key itself. It is signed with HMAC-SHA256 under a key derived from
the master secret (`MAINTLINK_SECRET_KEY`, or the data directory's key file): signed with
the newest master key, checked against every configured one, so a key rotation does not
sign everybody out. Every request also checks that the admin key still exists and is not
revoked, so revoking a key ends its dashboard sessions at once.

CSRF: each POST form carries a synchronizer token, an HMAC of the session's nonce, so a
token is only good for the session it was rendered in. The sign-in form, which has no
session yet, is bound the same way to a short-lived pre-session cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.config import Settings
from maintlink.crypto import KEY_FILE_NAME
from maintlink.store.tables import accounts, api_keys

COOKIE = "maintlink_dashboard"
LOGIN_COOKIE = "maintlink_dashboard_login"
COOKIE_PATH = "/dashboard"
LOGIN_TTL_SECONDS = 3600
_VERSION = "v1"


@dataclass(frozen=True)
class Session:
    key_id: str
    account_id: str
    expires_at: int  # unix seconds
    nonce: str
    account_name: str = ""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=32)
def _derive(material: str, purpose: str) -> tuple[bytes, ...]:
    keys = [k.strip() for k in material.split(",") if k.strip()]
    return tuple(hmac.new(k.encode(), b"maintlink/" + purpose.encode(), hashlib.sha256).digest()
                 for k in keys)


def _keys(settings: Settings, purpose: str) -> tuple[bytes, ...]:
    """Purpose-bound keys, newest first. Read where the cipher reads its keys (the cipher
    keeps them private); the runtime has created the key file before any request."""
    material = settings.secret_key or (settings.data_dir / KEY_FILE_NAME).read_text()
    return _derive(material, purpose)


def _mac(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


def _verify(settings: Settings, purpose: str, message: str, mac: str) -> bool:
    # Every key is tried, so the time taken does not reveal which one matched.
    found = False
    for key in _keys(settings, purpose):
        found |= hmac.compare_digest(_mac(key, message), mac)
    return found


# --- the session cookie ---------------------------------------------------------------------

def issue(settings: Settings, key_id: str, account_id: str) -> tuple[str, Session]:
    expires = int(time.time() + settings.dashboard_session_hours * 3600)
    session = Session(key_id, account_id, expires, secrets.token_urlsafe(16))
    payload = _b64(json.dumps(
        {"k": key_id, "a": account_id, "e": expires, "n": session.nonce},
        separators=(",", ":")).encode())
    message = f"{_VERSION}.{payload}"
    return f"{message}.{_mac(_keys(settings, 'dashboard-session')[0], message)}", session


def read(settings: Settings, cookie: str | None, now: float | None = None) -> Session | None:
    """The session a cookie holds, if its signature is good and it has not expired."""
    if not cookie or len(cookie) > 1024:
        return None
    parts = cookie.split(".")
    if len(parts) != 3 or parts[0] != _VERSION:
        return None
    message = f"{parts[0]}.{parts[1]}"
    if not _verify(settings, "dashboard-session", message, parts[2]):
        return None
    try:
        data = json.loads(_unb64(parts[1]))
        session = Session(str(data["k"]), str(data["a"]), int(data["e"]), str(data["n"]))
    except (ValueError, KeyError, TypeError):
        return None
    if session.expires_at <= (now if now is not None else time.time()):
        return None
    return session


async def still_valid(conn: AsyncConnection, session: Session) -> Session | None:
    """The key must still exist, belong to the account and not be revoked. Returns the
    session with the account's name, for the page header."""
    row = (await conn.execute(
        select(accounts.c.name).select_from(api_keys)
        .join(accounts, accounts.c.id == api_keys.c.account_id)
        .where(api_keys.c.id == session.key_id, api_keys.c.account_id == session.account_id,
               api_keys.c.revoked_at.is_(None)))).first()
    if row is None:
        return None
    return Session(session.key_id, session.account_id, session.expires_at, session.nonce,
                   str(row.name))


# --- CSRF -----------------------------------------------------------------------------------

def csrf_token(settings: Settings, session: Session) -> str:
    return _mac(_keys(settings, "dashboard-csrf")[0], session.nonce)


def csrf_ok(settings: Settings, session: Session, value: object) -> bool:
    return isinstance(value, str) and bool(value) and len(value) < 200 and _verify(
        settings, "dashboard-csrf", session.nonce, value)


def new_login_nonce() -> str:
    return secrets.token_urlsafe(16)


def login_csrf_token(settings: Settings, nonce: str) -> str:
    return _mac(_keys(settings, "dashboard-login-csrf")[0], nonce)


def login_csrf_ok(settings: Settings, nonce: str | None, value: object) -> bool:
    if not nonce or len(nonce) > 100 or not isinstance(value, str) or len(value) > 200:
        return False
    return _verify(settings, "dashboard-login-csrf", nonce, value)
