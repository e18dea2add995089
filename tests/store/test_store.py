from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, inspect, select

from maintlink.config import Settings
from maintlink.crypto import Cipher, SecretKeyError, generate_key, load_cipher
from maintlink.domain.accounts import create_admin_key
from maintlink.domain.secrets import reencrypt_all
from maintlink.store.db import _alembic_config, create_engine, migrate, needs_migration
from maintlink.store.tables import (
    accounts,
    attempts,
    connections,
    customers,
    deliveries,
    events,
    webhook_endpoints,
)


async def test_migrations_are_current_and_idempotent(settings: Settings) -> None:
    engine = create_engine(settings.effective_database_url)
    try:
        assert not await needs_migration(engine)
        await migrate(engine)  # a second run changes nothing
        assert not await needs_migration(engine)
    finally:
        await engine.dispose()


async def test_migration_0003_keeps_deliveries_and_attempts(settings: Settings) -> None:
    """0003 on a store with webhook traffic: rows kept, the attempts -> deliveries foreign
    key gone, the claim's partial indexes in place. The store is first taken down to 0002,
    which runs 0003's downgrade."""
    engine = create_engine(settings.effective_database_url)
    now = datetime.now(UTC)

    def to(revision: str, down: bool = False) -> Callable[[Connection], None]:
        def run(sync: Connection) -> None:
            config = _alembic_config(sync)
            (command.downgrade if down else command.upgrade)(config, revision)
        return run

    def shape(sync: Connection) -> tuple[list[Any], set[str]]:
        found = inspect(sync)
        return (found.get_foreign_keys("attempts"),
                {ix["name"] for ix in found.get_indexes("deliveries")})

    try:
        async with engine.begin() as conn:
            await conn.run_sync(to("0002", down=True))
            account_id, _, _ = await create_admin_key(conn, "acme")
            await conn.execute(webhook_endpoints.insert().values(
                id="we_1", account_id=account_id, managed_by_connection=0,
                url="https://hooks.example.com/x", api_version="v1", headers={},
                secret_encrypted="x", status="enabled", created_at=now, updated_at=now))
            await conn.execute(events.insert().values(
                id="evt_1", account_id=account_id, type="webhook.test", data={},
                created_at=now))
            common = {"event_id": "evt_1", "endpoint_id": "we_1", "account_id": account_id,
                      "body": "{}", "trigger": "scheduled", "created_at": now,
                      "updated_at": now}
            await conn.execute(deliveries.insert(), [
                {"id": "dlv_1", "status": "succeeded", "attempt_count": 1, **common},
                {"id": "dlv_2", "status": "pending", "attempt_count": 0,
                 "next_attempt_at": now, **common},
            ])
            await conn.execute(attempts.insert().values(
                id="att_1", delivery_id="dlv_1", event_id="evt_1", endpoint_id="we_1",
                account_id=account_id, attempt_number=1, trigger="scheduled",
                attempted_at=now, duration_ms=5, status_code=200, success=1))
            fks, indexes = await conn.run_sync(shape)
            assert [fk["referred_table"] for fk in fks] == ["deliveries"]
            assert "ix_deliveries_status_next_attempt_at" in indexes
        await migrate(engine)
        async with engine.connect() as conn:
            fks, indexes = await conn.run_sync(shape)
            assert fks == []
            assert {"ix_deliveries_pending_due", "ix_deliveries_leased_until"} <= indexes
            assert "ix_deliveries_status_next_attempt_at" not in indexes
            got = (await conn.execute(select(deliveries.c.id, deliveries.c.status)
                                      .order_by(deliveries.c.id))).all()
            assert [tuple(r) for r in got] == [("dlv_1", "succeeded"), ("dlv_2", "pending")]
            assert (await conn.execute(select(attempts.c.delivery_id))).scalars().all() == [
                "dlv_1"]
    finally:
        await migrate(engine)  # the next test's store is at the head whatever happened
        await engine.dispose()


async def test_datetimes_come_back_aware_utc(settings: Settings) -> None:
    engine = create_engine(settings.effective_database_url)
    stamp = datetime(2026, 3, 1, 12, 30, 15, 123000, tzinfo=timezone(timedelta(hours=2)))
    try:
        async with engine.begin() as conn:
            await conn.execute(accounts.insert().values(id="acct_t", name="t", created_at=stamp))
            got = (await conn.execute(select(accounts.c.created_at))).scalar_one()
        assert got == stamp and got.tzinfo is not None
        assert got.utcoffset() == timedelta(0)
        async with engine.begin() as conn:
            with pytest.raises(Exception, match="naive"):
                await conn.execute(accounts.insert().values(
                    id="acct_u", name="u", created_at=datetime(2026, 1, 1)))
    finally:
        await engine.dispose()


def test_cipher_rotation_old_keys_decrypt_newest_encrypts() -> None:
    old, new = generate_key(), generate_key()
    token = Cipher([old]).encrypt_json({"api_key": "s3cret"})
    both = Cipher([new, old])
    assert both.decrypt_json(token) == {"api_key": "s3cret"}
    rotated = both.rotate(token)
    assert Cipher([new]).decrypt_json(rotated) == {"api_key": "s3cret"}
    with pytest.raises(SecretKeyError):
        Cipher([old]).decrypt(rotated)
    with pytest.raises(SecretKeyError):
        Cipher(["not-a-key"])


def test_key_file_generated_once_owner_only(tmp_path: Path) -> None:
    first = load_cipher(None, tmp_path, may_generate=True)
    path = tmp_path / "secret.key"
    assert path.stat().st_mode & 0o777 == 0o600
    again = load_cipher(None, tmp_path, may_generate=True)
    assert again.decrypt(first.encrypt(b"x")) == b"x"
    with pytest.raises(SecretKeyError, match="required"):
        load_cipher(None, tmp_path / "other", may_generate=False)


async def test_reencrypt_all_moves_every_secret_to_the_newest_key(settings: Settings) -> None:
    old, new = generate_key(), generate_key()
    engine = create_engine(settings.effective_database_url)
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            account_id, _, _ = await create_admin_key(conn, "acme")
            await conn.execute(customers.insert().values(
                id="cus_1", account_id=account_id, external_id="c", created_at=now))
            for i in range(3):
                await conn.execute(connections.insert().values(
                    id=f"conn_{i}", account_id=account_id, customer_id="cus_1",
                    integration="sandbox", status="active",
                    credentials_encrypted=Cipher([old]).encrypt_json({"k": i}),
                    settings={}, status_changed_at=now, created_at=now, updated_at=now,
                    consecutive_failures=0, event_sequence=0))
        async with engine.begin() as conn:
            assert await reencrypt_all(conn, Cipher([new, old])) == 3
        async with engine.connect() as conn:
            rows = (await conn.execute(
                select(connections.c.credentials_encrypted).order_by(connections.c.id))).all()
        assert [Cipher([new]).decrypt_json(r[0]) for r in rows] == [{"k": 0}, {"k": 1}, {"k": 2}]
    finally:
        await engine.dispose()
