"""A switch that makes real providers refuse to run (tests must not reach networks or spend)."""

from __future__ import annotations

import os

from ..errors import ModelError

_blocked = False


def block_real_providers(blocked: bool = True) -> None:
    """While blocked, providers that reach a network or load real weights raise ModelError.

    Also set by ``ERPOZ_BLOCK_REAL_MODELS=1``; ``ERPOZ_BLOCK_REAL_MODELS=network`` blocks only
    what would reach a network other than this machine (weights shipped in packages still
    load: what erpoz's own test suite sets for itself and every process it starts). Test
    doubles (``erpoz.testing``) and loopback servers (the stub OpenAI server) always run.
    """
    global _blocked
    _blocked = blocked


def ensure_allowed(model: str, what: str, *, network: bool = False) -> None:
    """Called by real providers before they do anything real; ``network`` when that is
    reaching another host (not this machine)."""
    env = os.environ.get("ERPOZ_BLOCK_REAL_MODELS", "")
    if _blocked or env == "1" or (network and env == "network"):
        raise ModelError(
            f"real provider blocked in tests ({what}); use erpoz.testing.FunctionModel or "
            "ScriptedModel, a local server (erpoz.testing.OpenAIStubServer), or call "
            "erpoz.testing.block_real_providers(False)",
            model=model,
        )
