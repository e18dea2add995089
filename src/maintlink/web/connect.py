"""The hosted connection flow at /connect/{link_token}."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
