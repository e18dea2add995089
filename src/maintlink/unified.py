"""The unified data model: one shape per entity, whatever system the data comes from.

Every record has our `id`, the system's `remote_id`, the system's `created_at` /
`updated_at`, our `modified_at` (when maintlink last saw it change) and `deleted_at`, the
typed unified fields below, `custom_fields`, and on request the raw `remote_data`.
Enums are closed lists; a system value that maps to none of them is `UNKNOWN` (or OTHER),
with the system's own value kept beside it (`remote_status`, `remote_priority`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from maintlink.api.textcheck import NoNulModel

WorkOrderStatus = Literal["OPEN", "IN_PROGRESS", "ON_HOLD", "COMPLETED", "CANCELLED", "UNKNOWN"]
Priority = Literal["NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
WorkOrderType = Literal["CORRECTIVE", "PREVENTIVE", "INSPECTION", "OTHER"]
AssetStatus = Literal["ACTIVE", "INACTIVE", "DECOMMISSIONED", "UNKNOWN"]
LocationType = Literal["SITE", "BUILDING", "AREA", "FUNCTIONAL_LOCATION", "STOREROOM", "OTHER"]
PurchaseOrderStatus = Literal[
    "DRAFT", "PENDING_APPROVAL", "APPROVED", "REJECTED", "PARTIALLY_RECEIVED", "RECEIVED",
    "CANCELLED", "UNKNOWN",
]
Amount = Decimal | str  # decimals are sent as strings, so no precision is lost


class Record(BaseModel):
    model_config = ConfigDict(extra="allow")  # per-connection field mappings may add fields

    id: str = Field(description="maintlink's id, stable across syncs")
    remote_id: str = Field(description="The system's id (composite keys joined with ':')")
    remote_number: str | None = Field(default=None, description="Human-facing number")
    created_at: datetime | None = Field(default=None, description="Created, per the system")
    updated_at: datetime | None = Field(default=None, description="Changed, per the system")
    modified_at: datetime = Field(description="When maintlink last saw it change")
    deleted_at: datetime | None = Field(default=None, description="When it was deleted")
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    remote_data: dict[str, Any] | None = Field(
        default=None, description="The raw record, with `?include_remote_data=true`")


class WorkOrder(Record):
    object: Literal["work_order"] = "work_order"
    title: str | None = None
    description: str | None = None
    status: WorkOrderStatus = "UNKNOWN"
    remote_status: str | None = None
    priority: Priority | None = None
    remote_priority: str | None = None
    type: WorkOrderType | None = None
    asset_ids: list[str] = Field(default_factory=list)
    location_id: str | None = None
    assignee_user_ids: list[str] = Field(default_factory=list)
    team_ids: list[str] = Field(default_factory=list)
    due_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    parent_work_order_id: str | None = None


class Asset(Record):
    object: Literal["asset"] = "asset"
    name: str | None = None
    description: str | None = None
    serial_number: str | None = None
    model: str | None = None
    manufacturer: str | None = None
    barcode: str | None = None
    parent_asset_id: str | None = None
    location_id: str | None = None
    status: AssetStatus = "UNKNOWN"
    criticality: str | int | None = None


class Location(Record):
    object: Literal["location"] = "location"
    name: str | None = None
    code: str | None = None
    address: str | dict[str, Any] | None = None
    parent_location_id: str | None = None
    type: LocationType = "OTHER"


class Part(Record):
    object: Literal["part"] = "part"
    name: str | None = None
    part_number: str | None = None
    uom: str | None = None
    unit_cost: Amount | None = None
    currency: str | None = None
    qty_on_hand: Amount | None = None
    qty_min: Amount | None = None
    qty_reserved: Amount | None = None
    qty_on_order: Amount | None = None
    stock_location_id: str | None = None
    vendor_ids: list[str] = Field(default_factory=list)


class PurchaseOrderLine(BaseModel):
    model_config = ConfigDict(extra="allow")

    remote_id: str | None = None
    part_id: str | None = None
    description: str | None = None
    qty_ordered: Amount | None = None
    qty_received: Amount | None = None
    unit_price: Amount | None = None


class PurchaseOrder(Record):
    object: Literal["purchase_order"] = "purchase_order"
    number: str | None = None
    status: PurchaseOrderStatus = "UNKNOWN"
    remote_status: str | None = None
    vendor_id: str | None = None
    currency: str | None = None
    total_amount: Amount | None = None
    ordered_at: datetime | None = None
    due_at: datetime | None = None
    lines: list[PurchaseOrderLine] = Field(default_factory=list)


class Vendor(Record):
    object: Literal["vendor"] = "vendor"
    name: str | None = None
    code: str | None = None
    email: str | None = None
    phone: str | None = None
    address: str | dict[str, Any] | None = None
    contacts: list[dict[str, Any]] = Field(default_factory=list)


class User(Record):
    object: Literal["user"] = "user"
    first_name: str | None = None
    last_name: str | None = None
    display_name: str | None = None
    email: str | None = None
    phone: str | None = None
    role: str | None = None
    job_title: str | None = None
    is_active: bool | None = None


# entity -> (URL path, object type, model, filters: query name -> unified field)
ENTITY_API: dict[str, tuple[str, str, type[Record], dict[str, str]]] = {
    "work_orders": ("work-orders", "work_order", WorkOrder,
                    {"status": "status", "asset_id": "asset_ids", "location_id": "location_id",
                     "priority": "priority"}),
    "assets": ("assets", "asset", Asset,
               {"status": "status", "location_id": "location_id",
                "parent_asset_id": "parent_asset_id"}),
    "locations": ("locations", "location", Location,
                  {"type": "type", "parent_location_id": "parent_location_id"}),
    "parts": ("parts", "part", Part,
              {"vendor_id": "vendor_ids", "location_id": "stock_location_id"}),
    "purchase_orders": ("purchase-orders", "purchase_order", PurchaseOrder,
                        {"status": "status", "vendor_id": "vendor_id"}),
    "vendors": ("vendors", "vendor", Vendor, {}),
    "users": ("users", "user", User, {"email": "email"}),
}


class WorkOrderCreate(NoNulModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=20_000)
    status: WorkOrderStatus | None = None
    priority: Priority | None = None
    type: WorkOrderType | None = None
    asset_ids: list[str] | None = None
    location_id: str | None = None
    assignee_user_ids: list[str] | None = None
    due_at: datetime | None = None
    notes: str | None = Field(default=None, max_length=20_000)


class WorkOrderUpdate(NoNulModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=20_000)
    status: WorkOrderStatus | None = None
    priority: Priority | None = None
    assignee_user_ids: list[str] | None = None
    due_at: datetime | None = None
    notes: str | None = Field(default=None, max_length=20_000)


class PurchaseOrderLineCreate(NoNulModel):
    model_config = ConfigDict(extra="forbid")

    part_id: str | None = None
    description: str | None = Field(default=None, max_length=2000)
    qty_ordered: Decimal = Field(gt=0)
    unit_price: Decimal | None = Field(default=None, ge=0)


class PurchaseOrderCreate(NoNulModel):
    model_config = ConfigDict(extra="forbid")

    vendor_id: str = Field(min_length=1)
    status: PurchaseOrderStatus | None = None
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    due_at: datetime | None = None
    lines: list[PurchaseOrderLineCreate] = Field(min_length=1, max_length=500)
