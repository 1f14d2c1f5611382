"""Views of the log shared by the command line, the server and the dashboard: per-model call
statistics from ``model_called`` events, and the spans (``30m``, ``24h``, ``7d``) that windows
of them are given in."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["model_stats", "parse_since"]

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` → seconds."""
    m = _SPAN.match(text)
    if not m:
        raise ValueError(f"--since {text!r}: write a span like 30m, 24h or 7d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def _percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def model_stats(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per model, from ``model_called`` event data: calls, errors, tokens, cost and the
    latency (p50, p95) of its successful calls. Costliest first."""
    acc: dict[str, dict[str, Any]] = {}
    for d in events:
        name = str(d.get("model", "?"))
        row = acc.setdefault(
            name,
            {"calls": 0, "errors": 0, "in": 0, "out": 0, "cost": 0.0, "lat": []},
        )
        row["calls"] += 1
        if d.get("status") == "error":
            row["errors"] += 1
        else:
            latency = d.get("latency_ms")
            if isinstance(latency, int | float):
                row["lat"].append(float(latency))
        row["in"] += int(d.get("input_tokens") or 0)
        row["out"] += int(d.get("output_tokens") or 0)
        row["cost"] += float(d.get("cost_usd") or 0.0)
    out = []
    for name, r in acc.items():
        lat = sorted(r["lat"])
        out.append(
            {
                "model": name,
                "calls": r["calls"],
                "errors": r["errors"],
                "error_rate": round(r["errors"] / r["calls"], 4),
                "input_tokens": r["in"],
                "output_tokens": r["out"],
                "cost_usd": round(r["cost"], 9),
                "p50_ms": _percentile(lat, 50),
                "p95_ms": _percentile(lat, 95),
            }
        )
    out.sort(key=lambda r: (-r["cost_usd"], -r["calls"], r["model"]))
    return out
