"""What a running process shares: settings, the store, the cipher, outbound HTTP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from maintlink.config import Settings
from maintlink.crypto import Cipher, load_cipher
from maintlink.store.change_watch import ChangeWatch
from maintlink.store.db import create_engine
from maintlink.store.types import utcnow
from maintlink.versioning import VersionRegistry, default_registry


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    cipher: Cipher
    http: httpx.AsyncClient = field(repr=False)
    versions: VersionRegistry = field(default_factory=default_registry)
    # Every "now" of background work comes from here, so tests can move time.
    clock: Callable[[], datetime] = utcnow
    # Tells caches that an admin key or a connection changed, here or in another process.
    changes: ChangeWatch = field(init=False, repr=False)

    # For single-statement reads: on PostgreSQL the same pool without BEGIN/ROLLBACK around
    # each use (on SQLite that switch costs more than it saves).
    reader: AsyncEngine = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.changes = ChangeWatch(self.engine)
        self.reader = (self.engine.execution_options(isolation_level="AUTOCOMMIT")
                       if self.engine.dialect.name == "postgresql" else self.engine)

    def use_versions(self, versions: VersionRegistry) -> None:
        from maintlink.domain import events

        self.versions = versions
        events.configure(versions, self.settings.webhook_max_payload_bytes)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.engine.dispose()


def build_runtime(settings: Settings) -> Runtime:
    may_generate = settings.environment == "development" or settings.is_sqlite
    cipher = load_cipher(settings.secret_key, settings.data_dir, may_generate=may_generate)
    engine = create_engine(settings.effective_database_url)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.provider_timeout_seconds),
        follow_redirects=False,
        headers={"User-Agent": "maintlink/0.1"},
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )
    rt = Runtime(settings=settings, engine=engine, cipher=cipher, http=http)
    rt.use_versions(rt.versions)
    return rt
