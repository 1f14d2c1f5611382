"""A switch that makes real providers refuse to run (tests must not reach networks or spend)."""

from __future__ import annotations

import os

from ..errors import ModelError

_blocked = False


def block_real_providers(blocked: bool = True) -> None:
    """While blocked, providers that reach a network or load real weights raise ModelError.

    Also set by ``ERPOZ_BLOCK_REAL_MODELS=1``. Test doubles (``erpoz.testing``) always run.
    """
    global _blocked
    _blocked = blocked


def ensure_allowed(model: str, what: str) -> None:
    """Called by real providers before they do anything real."""
    if _blocked or os.environ.get("ERPOZ_BLOCK_REAL_MODELS") == "1":
        raise ModelError(
            f"real provider blocked in tests ({what}); use erpoz.testing.FunctionModel or "
            "ScriptedModel, or call erpoz.testing.block_real_providers(False)",
            model=model,
        )
