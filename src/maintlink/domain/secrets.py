"""Re-encryption of every secret at rest, after a new master key is put first."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from maintlink.crypto import Cipher
from maintlink.store.tables import connections

# (table, primary key column, encrypted column) of every secret at rest.
ENCRYPTED_COLUMNS = [(connections, connections.c.id, connections.c.credentials_encrypted)]


async def reencrypt_all(conn: AsyncConnection, cipher: Cipher) -> int:
    count = 0
    for table, pk, column in ENCRYPTED_COLUMNS:
        rows = (await conn.execute(select(pk, column).where(column.is_not(None)))).all()
        for key, ciphertext in rows:
            await conn.execute(
                update(table).where(pk == key).values({column.name: cipher.rotate(ciphertext)})
            )
            count += 1
    return count
