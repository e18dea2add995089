"""Link tokens: start the hosted connection flow, and exchange its one-time code."""

from __future__ import annotations

from fastapi import APIRouter

from maintlink.api.schemas import ERROR_RESPONSES

router = APIRouter(tags=["link tokens"], responses=ERROR_RESPONSES)
