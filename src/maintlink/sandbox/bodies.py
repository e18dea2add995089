"""Request bodies the sandbox accepts, validated strictly: unknown fields and wrong types fail."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from maintlink.sandbox.data import ENTITIES, format_ts, parse_ts
from maintlink.sandbox.state import ENTITY_PATHS, SandboxError

MAX_BODY_BYTES = 1_000_000

WorkOrderStatus = Literal["OPEN", "IN_PROGRESS", "ON_HOLD", "DONE", "CANCELED"]
Priority = Literal["NONE", "LOW", "MEDIUM", "HIGH"]
PurchaseOrderStatus = Literal[
    "PENDING", "REQUESTED", "APPROVED", "DECLINED", "PARTIALLY_FULFILLED", "COMPLETED", "CANCELED"
]
Id = Annotated[str, Field(min_length=1, max_length=64)]


def _mode(value: Any) -> Any:
    # `503` sent as a number means the same as "503".
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FaultsBody(Body):
    offline: bool = False
    offline_mode: Annotated[Literal["503", "refuse"], BeforeValidator(_mode)] = "503"
    latency_ms: int = Field(0, ge=0, le=600_000)
    rate_limit_per_minute: int | None = Field(None, ge=1, le=1_000_000)
    change_rate_per_minute: float = Field(0.0, ge=0, le=600_000)


class CredentialBody(Body):
    api_key: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]{8,128}$")
    name: str | None = Field(None, max_length=200)
    read_only: bool = False
    entities: list[str] | None = None

    @field_validator("entities")
    @classmethod
    def _known_entities(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        names = [ENTITY_PATHS.get(name, name) for name in value]
        unknown = sorted(set(names) - set(ENTITIES))
        if unknown:
            raise ValueError(f"unknown entities {unknown}; use {list(ENTITIES)}")
        return sorted(set(names))


class ChangesBody(Body):
    entity: str | None = None
    create: int = Field(0, ge=0, le=10_000)
    update: int = Field(0, ge=0, le=10_000)
    delete: int = Field(0, ge=0, le=10_000)

    @field_validator("entity")
    @classmethod
    def _known_entity(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = ENTITY_PATHS.get(value, value)
        if name not in ENTITIES:
            raise ValueError(f"unknown entity {value!r}; use one of {list(ENTITIES)}")
        return name


class ResetBody(Body):
    seed: int | None = None
    size: int | None = Field(None, ge=0, le=200_000)


def _timestamp(value: str) -> str:
    try:
        return format_ts(parse_ts(value))  # stored in the one format the API answers with
    except ValueError as exc:
        raise ValueError("must be an ISO 8601 timestamp") from exc


Timestamp = Annotated[str, AfterValidator(_timestamp)]


class WorkOrderCreate(Body):
    title: str = Field(min_length=1, max_length=500)
    description: str | None = Field(None, max_length=20_000)
    status: WorkOrderStatus = "OPEN"
    priority: Priority = "NONE"
    categories: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=10
    )
    assetId: Id | None = None  # camelCase: the wire format
    locationId: Id | None = None
    assigneeIds: list[Id] = Field(default_factory=list, max_length=50)
    dueDate: Timestamp | None = None
    notes: str | None = Field(None, max_length=20_000)

    @field_validator("title")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class WorkOrderPatch(Body):
    title: str | None = Field(None, min_length=1, max_length=500)
    description: str | None = Field(None, max_length=20_000)
    status: WorkOrderStatus | None = None
    priority: Priority | None = None
    assigneeIds: list[Id] | None = Field(None, max_length=50)
    dueDate: Timestamp | None = None
    notes: str | None = Field(None, max_length=20_000)

    @model_validator(mode="after")
    def _meaningful(self) -> WorkOrderPatch:
        if not self.model_fields_set:
            raise ValueError("set at least one field")
        for name in ("title", "status", "priority", "assigneeIds"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class PurchaseOrderItem(Body):
    partId: Id | None = None
    description: str | None = Field(None, max_length=500)
    quantity: int = Field(ge=1, le=1_000_000)
    unitCost: float = Field(ge=0, le=1_000_000_000)

    @model_validator(mode="after")
    def _identified(self) -> PurchaseOrderItem:
        if not (self.partId or self.description):
            raise ValueError("an item needs a partId or a description")
        return self


class PurchaseOrderCreate(Body):
    vendorId: Id
    items: list[PurchaseOrderItem] = Field(min_length=1, max_length=200)
    status: PurchaseOrderStatus = "REQUESTED"
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    dueDate: Timestamp | None = None
    shippingAddress: str | None = Field(None, max_length=500)


M = TypeVar("M", bound=Body)


def parse_body(model: type[M], raw: bytes) -> tuple[M, dict[str, Any]]:
    """Validate a JSON body; returns the model and the fields the client actually sent.

    An empty body counts as `{}`. Failures become 400 `invalid_json` / `invalid_request`.
    """
    if len(raw) > MAX_BODY_BYTES:
        raise SandboxError(413, "payload_too_large", f"Body exceeds {MAX_BODY_BYTES} bytes")
    try:
        parsed = model.model_validate_json(raw.strip() or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise SandboxError(400, "invalid_json", "Body is not valid JSON") from exc
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise SandboxError(400, "invalid_request", f"{where}: {first['msg']}") from exc
    return parsed, parsed.model_dump(include=set(parsed.model_fields_set))
