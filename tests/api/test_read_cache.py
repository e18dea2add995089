"""The API's read cache (keys, tokens, connection status) never answers with what another
process has already changed, on either store; and it never stores an answer read before a
change. Every test sets a cache lifetime of 300 s, so only the change signal can explain a
fresh answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import select

from maintlink.api.read_cache import ReadCache
from maintlink.app import create_app
from maintlink.config import Settings
from maintlink.domain import connections as conns
from maintlink.domain.accounts import create_admin_key, revoke_admin_key
from maintlink.ids import hash_token
from maintlink.runtime import Runtime, build_runtime
from maintlink.store.change_watch import ChangeWatch
from maintlink.store.db import create_engine
from maintlink.store.tables import api_keys
from maintlink.store.types import utcnow
from tests.conftest import bearer, create_connection, serve_app


def _cached(settings: Settings) -> Settings:
    return settings.model_copy(update={"cache_seconds": 300.0})


async def _until(
    request: Callable[[], Awaitable[httpx.Response]],
    done: Callable[[httpx.Response], bool],
    timeout: float = 5.0,
) -> httpx.Response:
    """The first answer that satisfies `done` (NOTIFY reaches the server asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await request()
        if done(answer) or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.02)


async def _in_other_process(settings: Settings, fn: Callable[[Runtime], Awaitable[Any]]) -> Any:
    """Runs `fn` on a runtime of its own (own engine, pool and change watch), as another
    maintlink process or the CLI would."""
    other = build_runtime(settings)
    try:
        return await fn(other)
    finally:
        await other.aclose()


async def test_key_revoked_by_another_process_is_refused(
    settings: Settings, admin_key: str
) -> None:
    settings = _cached(settings)

    async def revoke(rt: Runtime) -> None:
        async with rt.engine.begin() as conn:
            key_id = (
                await conn.execute(
                    select(api_keys.c.id).where(api_keys.c.key_hash == hash_token(admin_key))
                )
            ).scalar_one()
            assert await revoke_admin_key(conn, key_id)

    async with serve_app(create_app(settings, auto_migrate=False)) as url:
        async with httpx.AsyncClient(base_url=url) as c:

            def integrations() -> Awaitable[httpx.Response]:
                return c.get("/api/v1/integrations", headers=bearer(admin_key))

            assert (await integrations()).status_code == 200
            assert (await integrations()).status_code == 200  # now answered from the cache
            await _in_other_process(settings, revoke)
            answer = await _until(integrations, lambda r: r.status_code != 200)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "AUTHENTICATION_FAILED"


async def test_status_changed_by_another_process_is_seen(
    settings: Settings, admin_key: str, sandbox_url: str
) -> None:
    settings = _cached(settings)
    async with serve_app(create_app(settings, auto_migrate=False)) as url:
        async with httpx.AsyncClient(base_url=url) as c:
            created = await create_connection(c, admin_key, sandbox_url)
            cid, token = created["id"], created["token"]

            def status(key: str) -> Awaitable[httpx.Response]:
                return c.get(f"/api/v1/connections/{cid}/status", headers=bearer(key))

            for key in (admin_key, token, admin_key, token):
                assert (await status(key)).json()["status"] == "active"

            async def go_offline(rt: Runtime) -> None:
                async with rt.engine.begin() as conn:
                    await conns.transition(
                        conn,
                        cid,
                        conns.Status.OFFLINE,
                        reason="unreachable",
                        error_code="PROVIDER_UNAVAILABLE",
                    )

            await _in_other_process(settings, go_offline)
            seen = await _until(lambda: status(admin_key), lambda r: r.json()["status"] != "active")
            by_token = await status(token)

            async def disconnect(rt: Runtime) -> None:
                async with rt.engine.begin() as conn:
                    row = await conns.get_connection(conn, cid)
                    await conns.disconnect(conn, row.account_id, cid)

            await _in_other_process(settings, disconnect)
            refused = await _until(lambda: status(token), lambda r: r.status_code != 200)
    assert seen.json()["status"] == "offline" and seen.json()["online"] is False
    assert by_token.json()["status"] == "offline"
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "CONNECTION_DISCONNECTED"


async def test_changes_in_this_process_are_seen_by_the_next_request(
    settings: Settings, admin_key: str, sandbox_url: str
) -> None:
    settings = _cached(settings)
    async with serve_app(create_app(settings, auto_migrate=False)) as url:
        async with httpx.AsyncClient(base_url=url) as c:
            created = await create_connection(c, admin_key, sandbox_url)
            cid, token = created["id"], created["token"]
            path = f"/api/v1/connections/{cid}/status"
            assert (await c.get(path, headers=bearer(token))).status_code == 200
            rotated = await c.post(f"/api/v1/connections/{cid}/token", headers=bearer(admin_key))
            new_token = rotated.json()["token"]
            old = await c.get(path, headers=bearer(token))
            new = await c.get(path, headers=bearer(new_token))
            await c.post(f"/api/v1/connections/{cid}/disconnect", headers=bearer(admin_key))
            after = await c.get(path, headers=bearer(admin_key))
            void = await c.get(path, headers=bearer(new_token))
    assert old.status_code == 401 and new.status_code == 200
    assert after.json()["status"] == "disconnected"
    assert void.json()["error"]["code"] == "CONNECTION_DISCONNECTED"


async def test_an_answer_read_before_a_change_is_not_kept(settings: Settings) -> None:
    engine = create_engine(settings.effective_database_url)
    try:
        watch = ChangeWatch(engine)
        cache = ReadCache(watch, ttl=300)
        if engine.dialect.name == "postgresql":
            assert not watch.live  # nobody listens yet: nothing may be answered from memory
            cache.put("token", "h", "stale", cache.generation)
            assert cache.get("token", "h") is None
            stop = asyncio.Event()
            listener = asyncio.create_task(watch.listen(stop))
            while not watch.live:
                await asyncio.sleep(0.01)
        generation = cache.generation
        watch.changed()  # a change lands while the lookup was under way
        cache.put("token", "h", "stale", generation)
        assert cache.get("token", "h") is None
        cache.put("token", "h", "fresh", cache.generation)
        assert cache.get("token", "h") == "fresh"
        async with engine.begin() as conn:
            _, key_id, _ = await create_admin_key(conn, "acme")
        cache.put("token", "h", "fresh", cache.generation)
        async with engine.begin() as conn:  # columns no cache reads, or no row: kept
            await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id)
                .values(name="renamed", last_used_at=utcnow())
            )
            await conn.execute(
                api_keys.update().where(api_keys.c.id == "nobody").values(revoked_at=utcnow())
            )
        assert cache.get("token", "h") == "fresh"
        async with engine.begin() as conn:  # a revocation: emptied
            await conn.execute(
                api_keys.update().where(api_keys.c.id == key_id).values(revoked_at=utcnow())
            )
        assert cache.get("token", "h") is None
        if engine.dialect.name == "postgresql":
            stop.set()
            await listener
            assert not watch.live
    finally:
        await engine.dispose()


async def test_cache_off_still_answers(settings: Settings, admin_key: str) -> None:
    off = settings.model_copy(update={"cache_seconds": 0.0})
    async with serve_app(create_app(off, auto_migrate=False)) as url:
        async with httpx.AsyncClient(base_url=url) as c:
            codes = [
                (await c.get("/api/v1/integrations", headers=bearer(admin_key))).status_code
                for _ in range(3)
            ]
    assert codes == [200, 200, 200]
