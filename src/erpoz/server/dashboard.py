"""Placeholder: being built (issue 6)."""

from __future__ import annotations

from fastapi import APIRouter

from ._state import ServerState


def router(state: ServerState) -> APIRouter:
    return APIRouter()
