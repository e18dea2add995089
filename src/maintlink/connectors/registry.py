"""Which integrations exist. Adding a system: write its module, list its class here."""

from __future__ import annotations

from typing import Any

from maintlink.connectors.base import Connector
from maintlink.connectors.maintainx import MaintainXConnector
from maintlink.connectors.maximo import MaximoConnector
from maintlink.connectors.sandbox import SandboxConnector
from maintlink.connectors.sap_s4hana import SapS4HanaConnector
from maintlink.errors import MaintlinkError

CONNECTORS: dict[str, type[Connector]] = {
    cls.slug: cls
    for cls in (SandboxConnector, MaintainXConnector, SapS4HanaConnector, MaximoConnector)
}


def get_connector_class(slug: str) -> type[Connector]:
    try:
        return CONNECTORS[slug]
    except KeyError:
        raise MaintlinkError(
            "INTEGRATION_NOT_FOUND",
            f"No integration '{slug}'. Known: {', '.join(sorted(CONNECTORS))}.",
            details={"integrations": sorted(CONNECTORS)},
        ) from None


def describe(cls: type[Connector]) -> dict[str, Any]:
    """The registry entry served by `GET /api/v1/integrations`."""
    return {
        "object": "integration",
        "slug": cls.slug,
        "name": cls.name,
        "auth_type": cls.auth_type,
        "credential_fields": [
            {
                "name": f.name,
                "label": f.label,
                "type": f.type,
                "secret": f.secret,
                "required": f.required,
                "help": f.help,
                "placeholder": f.placeholder,
            }
            for f in cls.credential_fields
        ],
        "entities": list(cls.entities),
        "writable_entities": list(cls.writable_entities),
        "supports_writes": bool(cls.writable_entities),
        "setting_fields": [
            {
                "name": f.name,
                "label": f.label,
                "type": f.type,
                "default": f.default,
                "minimum": f.minimum,
                "maximum": f.maximum,
                "keys": list(f.keys) if f.keys is not None else None,
                "values": f.values,
                "help": f.help,
            }
            for f in cls.setting_fields
        ],
        "docs_url": cls.docs_url,
    }
