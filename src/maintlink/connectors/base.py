"""The contract every maintenance-system connector keeps.

A connector knows one system's API: its credential fields, how to check them, how to
page through each entity with a changed-since filter, and how to map raw records to the
unified model. Failures are classified once, here, into `ConnectorError.kind`, so the
domain decides what a failure means (reauthorization, offline, retry) without knowing
the system.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal, Protocol

import httpx

ENTITIES: tuple[str, ...] = (
    "work_orders",
    "assets",
    "locations",
    "parts",
    "purchase_orders",
    "vendors",
    "users",
)


class FailureKind(StrEnum):
    """How a provider failure is classified; the domain maps each kind to a reaction."""

    AUTH = "auth"  # credentials rejected, revoked or refresh refused -> reauthorization
    UNAVAILABLE = "unavailable"  # network error, 5xx, timeout -> offline after N in a row
    RATE_LIMITED = "rate_limited"  # wait retry_after seconds, then continue
    PERMISSION_DENIED = "permission_denied"  # credentials fine, a scope is missing
    INVALID_CONFIGURATION = "invalid_configuration"  # e.g. a malformed instance URL
    PROVIDER_ERROR = "provider_error"  # anything else the provider answered


class ConnectorError(Exception):
    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after


@dataclass(frozen=True)
class CredentialField:
    name: str
    label: str
    type: Literal["string", "url", "password"] = "string"
    secret: bool = False
    required: bool = True
    help: str | None = None
    placeholder: str | None = None


@dataclass(frozen=True)
class SettingField:
    """A connector setting a connection may set (in `settings`, beside the sync settings)."""

    name: str
    label: str
    type: Literal["integer", "number", "object"]
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    # For "object": the keys it may have (None: any) and what each value holds.
    keys: tuple[str, ...] | None = None
    values: Literal["string", "strings"] | None = None
    help: str | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` is not acceptable, or None."""
        if self.type in ("integer", "number"):
            if isinstance(value, bool) or not isinstance(value, int | float) or (
                self.type == "integer" and not isinstance(value, int)
            ):
                return f"must be an {self.type}" if self.type == "integer" else "must be a number"
            if self.minimum is not None and value < self.minimum:
                return f"must be at least {self.minimum:g}"
            if self.maximum is not None and value > self.maximum:
                return f"must be at most {self.maximum:g}"
            return None
        if not isinstance(value, dict):
            return "must be an object"
        for key, item in value.items():
            if not isinstance(key, str) or not key or len(key) > 200:
                return "keys must be non-empty strings"
            if self.keys is not None and key not in self.keys:
                return f"'{key}' is not one of: {', '.join(self.keys)}"
            if self.values == "string" and not (isinstance(item, str) and 0 < len(item) <= 200):
                return f"'{key}' must be a non-empty string"
            if self.values == "strings" and not (
                isinstance(item, list) and len(item) <= 200
                and all(isinstance(v, str) and 0 < len(v) <= 200 for v in item)
            ):
                return f"'{key}' must be a list of non-empty strings"
        return None


def page_size_setting(maximum: int, default: int = 100) -> SettingField:
    return SettingField("page_size", "Records per page", "integer", default, 1, maximum,
                        help="Records asked for per request to the system")


TIMEOUT_SETTING = SettingField("timeout", "Request timeout (seconds)", "number", 10, 1, 120,
                               help="Seconds each request to the system may take")


@dataclass(frozen=True)
class AccountInfo:
    """What a successful credential check learned about the remote account."""

    remote_account_id: str | None = None
    remote_account_name: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # The credentials as they stand after the check: an OAuth2 check may have refreshed
    # (and so rotated) the tokens, and the rotated ones are what must be stored.
    credentials: Mapping[str, Any] | None = None


class CredentialStore(Protocol):
    """Where a connector reads and renews its stored credentials (OAuth2 tokens).

    The domain's implementation serializes `refresh` per connection across every worker
    (a row lock in the store), re-reads the credentials under that lock, and calls `renew`
    only if they are still the ones the caller saw, so one refresh happens at a time and a
    refresh token is never used twice.
    """

    async def refresh(
        self,
        seen: Mapping[str, Any],
        renew: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]],
    ) -> Mapping[str, Any]:
        """Return current credentials: `renew(current)` persisted, or what another worker
        stored meanwhile. `renew` raising ConnectorError(AUTH) means reauthorization."""
        ...


class MemoryCredentialStore:
    """For connectors not yet stored (credential checks while connecting)."""

    def __init__(self) -> None:
        self.saved: Mapping[str, Any] | None = None

    async def refresh(
        self,
        seen: Mapping[str, Any],
        renew: Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]],
    ) -> Mapping[str, Any]:
        self.saved = await renew(seen)
        return self.saved


@dataclass
class Page:
    records: list[dict[str, Any]]
    next_cursor: str | None


class Connector:
    """Base class: subclasses set the class attributes and implement the methods."""

    slug: ClassVar[str]
    name: ClassVar[str]
    auth_type: ClassVar[Literal["api_key", "oauth2", "basic"]]
    credential_fields: ClassVar[tuple[CredentialField, ...]]
    entities: ClassVar[tuple[str, ...]] = ENTITIES
    writable_entities: ClassVar[tuple[str, ...]] = ()
    docs_url: ClassVar[str | None] = None
    # False: the system never reports deletions in its change feed, so the sync engine
    # finds them by periodic full reconciliation (ids no longer listed).
    reports_deletions: ClassVar[bool] = True
    # Connector settings a connection may set; listed by `GET /api/v1/integrations`.
    setting_fields: ClassVar[tuple[SettingField, ...]] = ()

    @classmethod
    def settings_problems(cls, settings: Mapping[str, Any]) -> dict[str, str]:
        """`{setting: why}` for every connector setting in `settings` that is unknown or
        not acceptable."""
        fields = {f.name: f for f in cls.setting_fields}
        problems: dict[str, str] = {}
        for name, value in settings.items():
            spec = fields.get(name)
            if spec is None:
                known = ", ".join(sorted(fields)) or "none"
                problems[name] = f"not a setting of {cls.slug} (its settings: {known})"
            elif (why := spec.problem(value)) is not None:
                problems[name] = why
        return problems

    def __init__(
        self,
        credentials: Mapping[str, Any],
        http: httpx.AsyncClient,
        settings: Mapping[str, Any] | None = None,
        credential_store: CredentialStore | None = None,
    ) -> None:
        self.credentials = dict(credentials)
        self.http = http
        self.settings = dict(settings or {})
        self.credential_store: CredentialStore = credential_store or MemoryCredentialStore()

    async def validate(self) -> AccountInfo:
        """Check the credentials against the system; raise ConnectorError when refused."""
        raise NotImplementedError

    async def check_health(self) -> None:
        """The cheapest authenticated call the system offers; raises ConnectorError."""
        raise NotImplementedError

    def list_records(
        self, entity: str, *, modified_since: datetime | None = None, cursor: str | None = None
    ) -> AsyncIterator[Page]:
        """Stream pages of raw records, oldest change first where the system allows."""
        raise NotImplementedError

    def map_record(self, entity: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Map one raw record to the unified model's fields, plus `remote_id`, `created_at`,
        `updated_at` and `remote_deleted_at` (aware datetimes or None)."""
        raise NotImplementedError

    async def create(self, entity: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create from unified fields; returns the system's raw record. ValueError for
        fields the system cannot take; ConnectorError when it refuses."""
        raise ValueError(f"{self.name} cannot create {entity}")

    async def update(
        self, entity: str, remote_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Update from unified fields; returns the system's raw record."""
        raise ValueError(f"{self.name} cannot update {entity}")
