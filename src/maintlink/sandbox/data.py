"""Reproducible maintenance data for the sandbox, in the shape of a MaintainX-style API.

Everything comes from one `random.Random(seed)`, in a fixed order, with timestamps spread over
the ~120 days before an anchor (midnight UTC of the start day), so the same seed on the same day
gives the same records. Records are plain JSON-ready dicts with camelCase fields; ids are
strings. A deleted record keeps its place and carries `"deleted": true, "deletedAt": ts`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

Record = dict[str, Any]

ENTITIES: tuple[str, ...] = (
    "work_orders",
    "assets",
    "locations",
    "parts",
    "purchase_orders",
    "vendors",
    "users",
)

# Each entity counts from its own base so an id never looks valid for the wrong entity.
ID_BASE: dict[str, int] = {
    "work_orders": 100_000,
    "assets": 200_000,
    "locations": 300_000,
    "parts": 400_000,
    "purchase_orders": 500_000,
    "vendors": 600_000,
    "users": 700_000,
}

WORK_ORDER_STATUSES = ("OPEN", "IN_PROGRESS", "ON_HOLD", "DONE", "CANCELED")
PRIORITIES = ("NONE", "LOW", "MEDIUM", "HIGH")
CATEGORIES = ("CORRECTIVE", "PREVENTIVE", "INSPECTION", "SAFETY")
ASSET_STATUSES = ("ONLINE", "OFFLINE", "DECOMMISSIONED")
# PENDING is a draft not yet sent for approval; REQUESTED waits for approval.
PURCHASE_ORDER_STATUSES = (
    "PENDING",
    "REQUESTED",
    "APPROVED",
    "DECLINED",
    "PARTIALLY_FULFILLED",
    "COMPLETED",
    "CANCELED",
)
LOCATION_TYPES = ("SITE", "BUILDING", "AREA", "STOREROOM")
_PLACES = ("SITE", "BUILDING", "AREA")  # where assets stand: every type but storerooms
USER_ROLES = ("ADMIN", "TECHNICIAN", "REQUESTER", "VIEW_ONLY")

HISTORY = timedelta(days=120)

_FIRST_NAMES = (
    "Ana", "Ben", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
    "Kofi", "Lena", "Marco", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq",
)  # fmt: skip
_LAST_NAMES = (
    "Alvarez", "Becker", "Chen", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito",
    "Jensen", "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Rossi", "Silva",
)  # fmt: skip
_CITIES = ("Bedford", "Dayton", "Leipzig", "Lyon", "Monterrey", "Osaka", "Tilburg", "Valencia")
_STREETS = ("Industrial Way", "Mill Road", "Harbor Street", "Foundry Lane", "Canal Avenue")
_AREAS = (
    "Packaging Line",
    "Assembly Line",
    "Boiler Room",
    "Paint Shop",
    "Loading Dock",
    "Press Bay",
)
# (asset type, tag prefix, manufacturers, models)
_ASSET_TYPES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Centrifugal Pump", "P", ("Grundfos", "KSB", "Xylem"), ("CR 32-2", "Etanorm 50", "e-1510")),
    (
        "Air Compressor",
        "AC",
        ("Atlas Copco", "Kaeser", "Ingersoll Rand"),
        ("GA 37", "SK 25", "R55"),
    ),
    ("Belt Conveyor", "CV", ("Dorner", "Hytrol", "Interroll"), ("2200", "E24", "RM 8310")),
    ("CNC Mill", "CNC", ("Haas", "DMG Mori", "Mazak"), ("VF-2", "DMU 50", "VCN-530C")),
    ("Forklift", "FL", ("Toyota", "Linde", "Hyster"), ("8FGU25", "E20", "H50FT")),
    ("Chiller", "CH", ("Carrier", "Trane", "Daikin"), ("30XA", "CVHE", "EWAD")),
    ("Hydraulic Press", "HP", ("Schuler", "Beckwood", "Enerpac"), ("MSD 400", "H-150", "IPR-20")),
    ("Boiler", "B", ("Cleaver-Brooks", "Viessmann", "Bosch"), ("CBEX 200", "Vitomax", "UT-L 24")),
    ("Generator", "G", ("Caterpillar", "Cummins", "Kohler"), ("C15", "C500D6", "KD800")),
    ("Air Handler", "AHU", ("Carrier", "Trane", "York"), ("39M", "M-Series", "Solution")),
)
_PARTS: tuple[tuple[str, str, float], ...] = (
    ("Deep groove ball bearing 6205-2RS", "each", 8.4),
    ("V-belt A42", "each", 12.9),
    ("Hydraulic filter element", "each", 46.0),
    ("O-ring kit, NBR", "box", 31.5),
    ("Mechanical seal 32 mm", "each", 189.0),
    ("Lithium grease cartridge", "each", 7.25),
    ("Proximity sensor M18", "each", 64.0),
    ("Fuse 10 A, time-delay", "box", 18.6),
    ("Gear oil ISO VG 220", "liter", 9.8),
    ("Conveyor belt splice kit", "each", 142.0),
    ("Air filter cartridge", "each", 54.5),
    ("Contactor 24 VDC coil", "each", 88.0),
)
_WORK_ACTIONS = (
    ("Inspect", "INSPECTION"),
    ("Monthly PM on", "PREVENTIVE"),
    ("Lubricate", "PREVENTIVE"),
    ("Calibrate", "PREVENTIVE"),
    ("Replace bearing on", "CORRECTIVE"),
    ("Repair leak on", "CORRECTIVE"),
    ("Investigate noise from", "CORRECTIVE"),
    ("Lockout check on", "SAFETY"),
)
_VENDOR_NAMES = (
    "Apex Industrial Supply", "Brightline Bearings", "Castor Electric", "Delta Fluid Power",
    "Everline Parts", "Fulcrum Tools", "Granite Safety", "Helix Automation", "Ironwood MRO",
    "Juniper Filtration",
)  # fmt: skip
_JOB_TITLES = (
    "Maintenance Technician", "Reliability Engineer", "Planner", "Electrician",
    "Maintenance Manager", "Storeroom Clerk",
)  # fmt: skip


def format_ts(value: datetime) -> str:
    """UTC, millisecond precision, `Z` suffix: one fixed width so strings sort by time."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_ts(value: str) -> datetime:
    """Parse ISO 8601 (`Z`, offsets, date only); naive values are UTC. Raises ValueError."""
    parsed = datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def entity_counts(size: int) -> dict[str, int]:
    """How many records of each entity a data set of `size` work orders holds."""
    return {
        "work_orders": size,
        "assets": max(1, size // 2),
        "locations": max(3, size // 10),
        "parts": max(1, size // 2),
        "purchase_orders": size // 4,
        "vendors": max(3, size // 20),
        "users": max(3, size // 20),
    }


@dataclass
class Dataset:
    """All records by entity and id, and the next sequence number for new ids."""

    records: dict[str, dict[str, Record]] = field(
        default_factory=lambda: {entity: {} for entity in ENTITIES}
    )
    next_seq: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENTITIES, 1))

    def new_id(self, entity: str) -> tuple[str, int]:
        seq = self.next_seq[entity]
        self.next_seq[entity] = seq + 1
        return str(ID_BASE[entity] + seq), seq

    def live_ids(self, entity: str) -> list[str]:
        return [rid for rid, rec in self.records[entity].items() if not rec.get("deleted")]

    def live_location_ids(self, types: tuple[str, ...]) -> list[str]:
        """Ids of the live locations of these types, in the order they were added."""
        locations = self.records["locations"].values()
        return [r["id"] for r in locations if r["type"] in types and not r.get("deleted")]

    def add(self, entity: str, record: Record) -> Record:
        self.records[entity][record["id"]] = record
        return record


class _GeneratingDataset(Dataset):
    """`Dataset` whose look-ups are answered from lists kept up to date by `add`, so that
    generation is linear in the size instead of quadratic. Only for `generate`, which adds
    records and never deletes any (later edits mark records deleted in place, unseen here)."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[str, list[str]] = {entity: [] for entity in ENTITIES}
        self._locations: dict[tuple[str, ...], list[str]] = {}

    def live_ids(self, entity: str) -> list[str]:
        return self._live[entity]

    def live_location_ids(self, types: tuple[str, ...]) -> list[str]:
        found = self._locations.get(types)
        if found is None:
            found = self._locations[types] = super().live_location_ids(types)
        return found

    def add(self, entity: str, record: Record) -> Record:
        if record["id"] in self.records[entity] or record.get("deleted"):
            raise ValueError("generation only adds new, live records")
        super().add(entity, record)
        self._live[entity].append(record["id"])
        if entity == "locations":
            for types, found in self._locations.items():
                if record["type"] in types:
                    found.append(record["id"])
        return record


class RecordFactory:
    """Builds realistic records; shared by the initial generation and later simulated changes."""

    def __init__(self, rng: random.Random, dataset: Dataset) -> None:
        self.rng = rng
        self.data = dataset

    # -- helpers ---------------------------------------------------------------------------

    def _pick(self, entity: str) -> str | None:
        ids = self.data.live_ids(entity)
        return self.rng.choice(ids) if ids else None

    def _sample(self, entity: str, low: int, high: int) -> list[str]:
        ids = self.data.live_ids(entity)
        count = min(len(ids), self.rng.randint(low, high))
        return sorted(self.rng.sample(ids, count))

    def _digits(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(n))

    def _phone(self) -> str:
        return f"+1-555-{self._digits(3)}-{self._digits(4)}"

    def _address(self) -> str:
        return (
            f"{self.rng.randint(10, 999)} {self.rng.choice(_STREETS)}, {self.rng.choice(_CITIES)}"
        )

    def between(self, start: datetime, end: datetime) -> datetime:
        span = max(0.0, (end - start).total_seconds())
        moment = start + timedelta(seconds=self.rng.uniform(0, span))
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)

    # -- entities --------------------------------------------------------------------------

    def user(self, created: datetime, updated: datetime) -> Record:
        rid, seq = self.data.new_id("users")
        first, last = self.rng.choice(_FIRST_NAMES), self.rng.choice(_LAST_NAMES)
        return {
            "id": rid,
            "firstName": first,
            "lastName": last,
            "email": f"{first}.{last}{seq}@example.com".lower(),
            "phoneNumber": self._phone(),
            "role": self.rng.choices(USER_ROLES, weights=(1, 6, 2, 1))[0],
            "jobTitle": self.rng.choice(_JOB_TITLES),
            "hourlyRate": round(self.rng.uniform(25, 85), 2),
            "isActive": self.rng.random() > 0.1,
            "createdAt": format_ts(created),
            "updatedAt": format_ts(updated),
        }

    def vendor(self, created: datetime, updated: datetime) -> Record:
        rid, seq = self.data.new_id("vendors")
        name = self.rng.choice(_VENDOR_NAMES)
        domain = name.lower().replace(" ", "") + ".example"
        contact = f"{self.rng.choice(_FIRST_NAMES)} {self.rng.choice(_LAST_NAMES)}"
        return {
            "id": rid,
            "name": f"{name} #{seq}",
            "code": f"V-{seq:04d}",
            "description": f"Supplier of {self.rng.choice(_PARTS)[0].split(',')[0].lower()}s",
            "email": f"orders@{domain}",
            "phone": self._phone(),
            "address": self._address(),
            "contacts": [
                {
                    "name": contact,
                    "email": f"{contact.split()[0].lower()}@{domain}",
                    "phone": self._phone(),
                }
            ],
            "createdAt": format_ts(created),
            "updatedAt": format_ts(updated),
        }

    def location(self, created: datetime, updated: datetime, kind: str | None = None) -> Record:
        rid, seq = self.data.new_id("locations")
        sites = self.data.live_location_ids(("SITE",))
        if kind is None:
            kind = "SITE" if not sites else self.rng.choice(LOCATION_TYPES[1:])
        parents = {
            "SITE": [],
            "BUILDING": sites,
            "STOREROOM": sites,
            "AREA": self.data.live_location_ids(("SITE", "BUILDING")),
        }[kind]
        parent = self.rng.choice(parents) if parents else None
        city = self.rng.choice(_CITIES)
        name = {
            "SITE": f"{city} Plant",
            "BUILDING": f"Building {chr(65 + seq % 26)}{seq}",
            "AREA": f"{self.rng.choice(_AREAS)} {seq}",
            "STOREROOM": f"Storeroom {seq}",
        }[kind]
        prefix = {"SITE": "SITE", "BUILDING": "BLD", "AREA": "AREA", "STOREROOM": "STR"}[kind]
        return {
            "id": rid,
            "name": name,
            "code": f"{prefix}-{seq:03d}",
            "type": kind,
            "address": self._address() if kind == "SITE" else None,
            "parentId": parent,
            "createdAt": format_ts(created),
            "updatedAt": format_ts(updated),
        }

    def asset(self, created: datetime, updated: datetime) -> Record:
        rid, seq = self.data.new_id("assets")
        kind, tag, makers, models = self.rng.choice(_ASSET_TYPES)
        assets = self.data.live_ids("assets")
        places = self.data.live_location_ids(_PLACES)
        return {
            "id": rid,
            "name": f"{kind} {tag}-{seq:03d}",
            "description": f"{kind} serving {self.rng.choice(_AREAS).lower()}",
            "parentId": self.rng.choice(assets) if assets and self.rng.random() < 0.2 else None,
            "locationId": self.rng.choice(places) if places else None,
            "serialNumber": f"SN{self._digits(8)}",
            "model": self.rng.choice(models),
            "manufacturer": self.rng.choice(makers),
            "barcode": self._digits(12),
            "status": self.rng.choices(ASSET_STATUSES, weights=(16, 3, 1))[0],
            "criticality": self.rng.choice(("LOW", "MEDIUM", "HIGH")),
            "vendorIds": self._sample("vendors", 0, 2),
            "customFields": {"Cost center": f"CC-{self.rng.randint(100, 140)}"},
            "createdAt": format_ts(created),
            "updatedAt": format_ts(updated),
        }

    def part(self, created: datetime, updated: datetime) -> Record:
        rid, seq = self.data.new_id("parts")
        name, unit, cost = self.rng.choice(_PARTS)
        stores = self.data.live_location_ids(("STOREROOM",))
        minimum = self.rng.randint(0, 10)
        return {
            "id": rid,
            "name": name,
            "partNumber": f"PN-{seq:05d}",
            "barcode": self._digits(12),
            "unit": unit,
            "unitCost": round(cost * self.rng.uniform(0.85, 1.25), 2),
            "currency": "USD",
            "availableQuantity": self.rng.randint(0, 60),
            "minimumQuantity": minimum,
            "reservedQuantity": self.rng.randint(0, 4),
            "orderedQuantity": self.rng.choice((0, 0, 0, minimum + 5)),
            "locationId": self.rng.choice(stores) if stores else self._pick("locations"),
            "vendorIds": self._sample("vendors", 1, 2),
            "createdAt": format_ts(created),
            "updatedAt": format_ts(updated),
        }

    def work_order(self, created: datetime, updated: datetime, status: str | None = None) -> Record:
        rid, seq = self.data.new_id("work_orders")
        if status is None:
            status = self.rng.choices(WORK_ORDER_STATUSES, weights=(5, 3, 1, 8, 1))[0]
        action, category = self.rng.choice(_WORK_ACTIONS)
        asset_id = self._pick("assets") if self.rng.random() < 0.9 else None
        asset = self.data.records["assets"].get(asset_id) if asset_id else None
        target = asset["name"] if asset else f"{self.rng.choice(_AREAS).lower()}"
        location_id = asset["locationId"] if asset else self._pick("locations")
        started = completed = None
        if status in ("IN_PROGRESS", "ON_HOLD", "DONE"):
            started = self.between(created, updated)
        if status == "DONE" and started is not None:
            completed = self.between(started, updated)
        due = created + timedelta(days=self.rng.randint(1, 30))
        return {
            "id": rid,
            "sequentialId": seq,
            "title": f"{action} {target}",
            "description": f"{action} {target}. Follow the standard procedure and log readings.",
            "status": status,
            "priority": self.rng.choices(PRIORITIES, weights=(2, 4, 4, 2))[0],
            "categories": [category],
            "assetId": asset_id,
            "locationId": location_id,
            "assigneeIds": self._sample("users", 0, 2),
            "dueDate": format_ts(due),
            "startedAt": format_ts(started) if started else None,
            "completedAt": format_ts(completed) if completed else None,
            "notes": None,
            "customFields": {"Downtime (h)": round(self.rng.uniform(0, 8), 1)},
            "createdAt": format_ts(created),
            "updatedAt": format_ts(updated),
        }

    def purchase_order(self, created: datetime, updated: datetime) -> Record:
        rid, seq = self.data.new_id("purchase_orders")
        status = self.rng.choices(PURCHASE_ORDER_STATUSES, weights=(1, 2, 3, 1, 1, 4, 1))[0]
        items = []
        for line in range(1, self.rng.randint(1, 4) + 1):
            part_id = self._pick("parts")
            part = self.data.records["parts"].get(part_id) if part_id else None
            quantity = self.rng.randint(1, 20)
            received = {"COMPLETED": quantity, "PARTIALLY_FULFILLED": quantity // 2}.get(status, 0)
            items.append(
                {
                    "id": f"{rid}-{line}",
                    "partId": part_id,
                    "description": part["name"] if part else "Miscellaneous supplies",
                    "quantity": quantity,
                    "quantityReceived": received,
                    "unitCost": part["unitCost"] if part else round(self.rng.uniform(5, 200), 2),
                }
            )
        ordered = None
        if status in ("APPROVED", "PARTIALLY_FULFILLED", "COMPLETED"):
            ordered = self.between(created, updated)
        # The first site ever added, even if deleted since: the first location is a site.
        site = next(
            (r for r in self.data.records["locations"].values() if r["type"] == "SITE"), None
        )
        return {
            "id": rid,
            "number": f"PO-{seq:05d}",
            "status": status,
            "vendorId": self._pick("vendors"),
            "currency": "USD",
            "items": items,
            "totalCost": total_cost(items),
            "orderedAt": format_ts(ordered) if ordered else None,
            "dueDate": format_ts(created + timedelta(days=self.rng.randint(7, 45))),
            "shippingAddress": site["address"] if site else None,
            "createdAt": format_ts(created),
            "updatedAt": format_ts(updated),
        }

    def build(self, entity: str, created: datetime, updated: datetime) -> Record:
        builder = {
            "work_orders": self.work_order,
            "assets": self.asset,
            "locations": self.location,
            "parts": self.part,
            "purchase_orders": self.purchase_order,
            "vendors": self.vendor,
            "users": self.user,
        }[entity]
        return builder(created, updated)

    # -- simulated edits -------------------------------------------------------------------

    def mutate(self, entity: str, record: Record) -> None:
        """Change a field or two the way people do in a real system (timestamps aside)."""
        rng = self.rng
        if entity == "work_orders":
            nxt = {"OPEN": "IN_PROGRESS", "IN_PROGRESS": "DONE", "ON_HOLD": "IN_PROGRESS"}
            if record["status"] in nxt and rng.random() < 0.7:
                record["status"] = nxt[record["status"]]
            else:
                record["priority"] = rng.choice(PRIORITIES)
        elif entity == "assets":
            record["status"] = rng.choice(ASSET_STATUSES[:2])
        elif entity == "locations":
            record["name"] = f"{record['name'].split(' (')[0]} ({rng.choice(_CITIES)})"
        elif entity == "parts":
            record["availableQuantity"] = max(0, record["availableQuantity"] + rng.randint(-5, 8))
        elif entity == "purchase_orders":
            nxt = {"PENDING": "REQUESTED", "REQUESTED": "APPROVED", "APPROVED": "COMPLETED"}
            record["status"] = nxt.get(record["status"], record["status"])
            if record["status"] == "COMPLETED":
                for item in record["items"]:
                    item["quantityReceived"] = item["quantity"]
        elif entity == "vendors":
            record["phone"] = self._phone()
        elif entity == "users":
            record["jobTitle"] = rng.choice(_JOB_TITLES)


def total_cost(items: list[Record]) -> float:
    return round(sum(item["quantity"] * item["unitCost"] for item in items), 2)


def anchor_for(now: datetime) -> datetime:
    """Generated history ends at midnight UTC of `now`'s day: stable across same-day restarts."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


# References only point backwards in this order, so every id a record holds exists.
_GENERATION_ORDER = (
    "users",
    "vendors",
    "locations",
    "assets",
    "parts",
    "work_orders",
    "purchase_orders",
)


def generate(seed: int, size: int, now: datetime) -> Dataset:
    """The full data set for `seed` and `size`, its history ending at `anchor_for(now)`."""
    if size < 0:
        raise ValueError("size must be >= 0")
    rng = random.Random(seed)
    dataset = _GeneratingDataset()
    factory = RecordFactory(rng, dataset)
    end = anchor_for(now)
    counts = entity_counts(size)
    for entity in _GENERATION_ORDER:
        for index in range(counts[entity]):
            created = factory.between(end - HISTORY, end - timedelta(minutes=1))
            updated = factory.between(created, end)
            if entity == "locations" and index == 1:
                # At least one storeroom, so parts always have a stock location.
                record = factory.location(created, updated, kind="STOREROOM")
            else:
                record = factory.build(entity, created, updated)
            dataset.add(entity, record)
    # A plain Dataset from here on: records are later deleted in place.
    return Dataset(records=dataset.records, next_seq=dataset.next_seq)
