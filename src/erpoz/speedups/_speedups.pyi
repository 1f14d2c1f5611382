"""Types of the C extension (src/erpoz/speedups/_speedups.c); see erpoz.speedups."""

from collections.abc import Sequence
from typing import Any

SHA256: str
"""Which SHA-256 it uses: ``"sha-ni"`` (the CPU's SHA extensions) or ``"portable"``."""

def chain_hash(
    prev_hash: str,
    run_id: str,
    seq: int,
    ts: float,
    kind: str,
    step: str | None,
    attempt: int,
    data: str,
    payload: str | None,
    /,
) -> str: ...
def leaf_hash(run_id: str, seq: int, event_hash: str, /) -> bytes: ...
def scan(
    rows: Sequence[Sequence[Any]], genesis: str, leaves: bool, /
) -> tuple[int, list[bytes] | None, list[tuple[str, int, int]]]: ...
def parents(level: Sequence[bytes], /) -> list[bytes]: ...
def sha256(data: bytes, portable: bool = False, /) -> bytes: ...
