"""Stored provider credentials, and the store connectors renew OAuth2 tokens through."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from maintlink.connectors.base import Connector
from maintlink.connectors.registry import get_connector_class
from maintlink.crypto import Cipher
from maintlink.runtime import Runtime
from maintlink.store.tables import connections

# SQLite means one process, so a per-connection asyncio lock serializes refreshes; on
# PostgreSQL the row lock does it across every worker.
_local_locks: dict[str, asyncio.Lock] = {}


class StoredCredentials:
    """`CredentialStore` backed by the connection's encrypted credentials."""

    def __init__(self, engine: AsyncEngine, cipher: Cipher, connection_id: str) -> None:
        self.engine = engine
        self.cipher = cipher
        self.connection_id = connection_id

    async def refresh(
        self,
        seen: Mapping[str, Any],
        renew: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]],
    ) -> Mapping[str, Any]:
        lock = _local_locks.setdefault(self.connection_id, asyncio.Lock())
        async with lock, self.engine.begin() as conn:
            row = (await conn.execute(
                select(connections.c.credentials_encrypted)
                .where(connections.c.id == self.connection_id).with_for_update()
            )).one()
            current = self.cipher.decrypt_json(row.credentials_encrypted)
            if dict(current) != dict(seen):
                return current  # another worker refreshed meanwhile: use its tokens
            fresh = dict(await renew(current))
            await conn.execute(update(connections).where(
                connections.c.id == self.connection_id).values(
                credentials_encrypted=self.cipher.encrypt_json(fresh)))
            return fresh


def connector_for(rt: Runtime, row: Any) -> Connector:
    """A connector for a stored connection, with its decrypted credentials."""
    cls = get_connector_class(row.integration)
    credentials = rt.cipher.decrypt_json(row.credentials_encrypted)
    return cls(credentials, rt.http, row.settings or {},
               StoredCredentials(rt.engine, rt.cipher, row.id))
