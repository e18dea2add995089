"""Accounts (the developer's organization) and their admin keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.ids import hash_token, new_id, new_token, token_hint
from maintlink.store.tables import accounts, api_keys
from maintlink.store.types import utcnow

ADMIN_KEY_PREFIX = "mlk"
_LAST_USED_GRANULARITY = timedelta(minutes=1)


@dataclass(frozen=True)
class AdminPrincipal:
    account_id: str
    key_id: str


async def get_or_create_account(conn: AsyncConnection, name: str) -> str:
    row = (await conn.execute(select(accounts.c.id).where(accounts.c.name == name))).first()
    if row:
        return str(row.id)
    account_id = new_id("acct")
    await conn.execute(accounts.insert().values(id=account_id, name=name, created_at=utcnow()))
    return account_id


async def create_admin_key(
    conn: AsyncConnection, account_name: str, key_name: str | None = None
) -> tuple[str, str, str]:
    """Returns (account_id, key_id, key). The key is shown once; only its hash is kept."""
    account_id = await get_or_create_account(conn, account_name)
    key = new_token(ADMIN_KEY_PREFIX)
    key_id = new_id("key")
    await conn.execute(
        api_keys.insert().values(
            id=key_id,
            account_id=account_id,
            key_hash=hash_token(key),
            hint=token_hint(key),
            name=key_name,
            created_at=utcnow(),
        )
    )
    return account_id, key_id, key


async def list_admin_keys(conn: AsyncConnection) -> list[dict[str, object]]:
    query = (
        select(
            api_keys.c.id,
            accounts.c.name.label("account"),
            api_keys.c.hint,
            api_keys.c.name,
            api_keys.c.created_at,
            api_keys.c.last_used_at,
            api_keys.c.revoked_at,
        )
        .join(accounts, accounts.c.id == api_keys.c.account_id)
        .order_by(api_keys.c.id)
    )
    return [{str(k): v for k, v in r._mapping.items()} for r in await conn.execute(query)]


async def revoke_admin_key(conn: AsyncConnection, key_id: str) -> bool:
    result = await conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return result.rowcount == 1


_LIVE_KEY = select(api_keys.c.id, api_keys.c.account_id, api_keys.c.last_used_at).where(
    api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None)
)


async def find_admin_key(
    conn: AsyncConnection, key: str
) -> tuple[AdminPrincipal, bool] | None:
    """The key's principal, and whether its `last_used_at` is due for an update (a read
    only: callers on a read-only connection call `touch_admin_key` when it is due)."""
    row = (await conn.execute(_LIVE_KEY, {"key_hash": hash_token(key)})).first()
    if row is None:
        return None
    last: datetime | None = row.last_used_at
    due = last is None or utcnow() - last > _LAST_USED_GRANULARITY
    return AdminPrincipal(account_id=row.account_id, key_id=row.id), due


async def touch_admin_key(conn: AsyncConnection, key_id: str) -> None:
    # Coarse on purpose: one write a minute per key, not one per request.
    await conn.execute(
        update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=utcnow())
    )


async def authenticate_admin_key(conn: AsyncConnection, key: str) -> AdminPrincipal | None:
    found = await find_admin_key(conn, key)
    if found is None:
        return None
    principal, due = found
    if due:
        await touch_admin_key(conn, principal.key_id)
    return principal
