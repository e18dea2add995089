"""Settings from `MAINTLINK_*` environment variables and an optional config file.

One typed object, read once per process. The config file (TOML, path in
`MAINTLINK_CONFIG_FILE`) holds the same keys without the prefix, lower-case; the
environment wins over the file.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _config_file() -> Path | None:
    value = os.environ.get("MAINTLINK_CONFIG_FILE")
    return Path(value) if value else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAINTLINK_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("./data")
    database_url: str | None = None  # None: SQLite at <data_dir>/maintlink.db
    secret_key: str | None = None  # comma-separated Fernet keys, newest first
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None  # how browsers reach this server (link URLs)
    log_level: str = "info"
    log_format: Literal["json", "text"] = "text"

    # Embedded sandbox system started by `maintlink serve`.
    sandbox_enabled: bool = True
    sandbox_port: int = 8090
    sandbox_seed: int = 42
    sandbox_size: int = 200

    # API rate limits, requests per minute.
    rate_limit_connection_per_minute: int = Field(default=600, ge=1)
    rate_limit_admin_per_minute: int = Field(default=1200, ge=1)
    # How long an API process remembers an admin key, a connection token's owner and a
    # connection's status without asking the store, seconds (0: never). Any change to a key
    # or a connection drops them at once.
    cache_seconds: float = Field(default=10.0, ge=0, le=300)

    # Largest accepted request body, bytes.
    max_request_body_bytes: int = Field(default=1_048_576, ge=1024)

    # Outbound HTTP to maintenance systems.
    provider_timeout_seconds: float = Field(default=10.0, gt=0)

    # Webhook delivery.
    webhook_allow_http: bool = False  # plain http:// URLs (local development only)
    webhook_allowed_networks: str = ""  # CIDRs allowed despite the private-address rule
    webhook_ca_bundle: str | None = None  # extra CA file to trust, beside the system's
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"  # seconds
    webhook_retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_max_retry_after_seconds: int = Field(default=86_400, ge=1)
    webhook_disable_after_hours: float = Field(default=120.0, gt=0)  # 5 days
    webhook_secret_overlap_hours: float = Field(default=24.0, ge=0)
    webhook_endpoint_concurrency: int = Field(default=8, ge=1)  # in flight per endpoint
    webhook_worker_concurrency: int = Field(default=128, ge=1)  # in flight per worker
    webhook_lease_seconds: int = Field(default=60, ge=15)
    webhook_max_payload_bytes: int = Field(default=262_144, ge=1024)
    webhook_response_body_bytes: int = Field(default=4096, ge=0)
    event_retention_days: int = Field(default=30, ge=1)

    # Syncs and health checks.
    sync_concurrency: int = Field(default=4, ge=1)  # syncs running at once per worker
    sync_lease_seconds: int = Field(default=120, ge=5)
    sync_overlap_seconds: int = Field(default=300, ge=0)  # incremental look-back
    sync_retry_backoff: str = "2,10,30"  # waits before retrying a transient failure
    sync_max_rate_limit_wait_seconds: float = Field(default=300, gt=0)
    full_sync_interval_hours: float = Field(default=24, gt=0)  # deletion reconciliation
    health_check_interval_seconds: float = Field(default=300, gt=0)
    health_offline_after: int = Field(default=3, ge=1)  # failures in a row -> offline

    # --- connection flow (link tokens, hosted page, OAuth clients) -------------------------
    # OAuth2 client per integration: {"sap_s4hana": {"client_id": ..., "client_secret": ...}}
    # (JSON in MAINTLINK_OAUTH_CLIENTS, or an [oauth_clients.<slug>] table in the file).
    # In development the simulators' demo clients fill the gaps, so `maintlink serve` works.
    oauth_clients: dict[str, dict[str, str]] = Field(default_factory=dict)
    link_token_max_failed_attempts: int = Field(default=5, ge=1, le=100)
    link_token_attempts_per_minute: int = Field(default=10, ge=1)  # submissions per token
    link_code_ttl_seconds: int = Field(default=600, ge=30, le=600)  # RFC 6749: at most 10 min

    # --- dashboard and API request log ---------------------------------------------------
    dashboard_session_hours: float = Field(default=12, gt=0, le=24 * 30)  # sign-in lifetime
    request_log_enabled: bool = True
    request_log_retention_days: float = Field(default=7, gt=0)
    request_log_max_rows: int = Field(default=1_000_000, ge=1000)  # oldest purged beyond
    request_log_flush_seconds: float = Field(default=1.0, gt=0, le=60)
    request_log_batch_rows: int = Field(default=500, ge=1)  # a full batch flushes at once
    request_log_buffer_rows: int = Field(default=50_000, ge=100)  # per process; oldest dropped

    @property
    def sync_backoff(self) -> list[float]:
        return [float(s) for s in self.sync_retry_backoff.split(",") if s.strip()]

    @property
    def retry_schedule(self) -> list[float]:
        return [float(s) for s in self.webhook_retry_schedule.split(",") if s.strip()]

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'maintlink.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and file, with explicit overrides (CLI flags)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
