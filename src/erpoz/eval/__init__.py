"""Evaluations of erpoz against public data: ``erpoz eval routing`` measures routers on recorded
answers (RouteLLM's GSM8K and MT-Bench, any data in the generic JSONL form), in-task and across
tasks (see :mod:`erpoz.eval.routing` and :mod:`erpoz.eval.data`)."""

from .data import KNOWN_PRICES, Dataset, Item, find_data, load_dataset
from .routing import (
    ROUTERS,
    Curve,
    Point,
    Report,
    evaluate_routing,
    load_routellm_gsm8k,
    oracle_quality,
    prices_for,
    summarize,
)

__all__ = [
    "KNOWN_PRICES",
    "ROUTERS",
    "Curve",
    "Dataset",
    "Item",
    "Point",
    "Report",
    "evaluate_routing",
    "find_data",
    "load_dataset",
    "load_routellm_gsm8k",
    "oracle_quality",
    "prices_for",
    "summarize",
]
