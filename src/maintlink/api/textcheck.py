"""NUL characters are refused in every request: PostgreSQL cannot store them in text or
JSON, and no maintenance system field needs them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, model_validator


def contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_nul(v) for v in value)
    return False


class NoNulModel(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        if contains_nul(data):
            raise ValueError("NUL characters (\\u0000) are not allowed")
        return data
