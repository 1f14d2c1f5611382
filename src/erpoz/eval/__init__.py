"""Evaluations of erpoz against public data: ``erpoz eval routing`` measures routers on
RouteLLM's recorded GSM8K answers (see :mod:`erpoz.eval.routing`)."""

from .routing import (
    DEFAULT_PRICES,
    ROUTERS,
    Curve,
    Dataset,
    Item,
    Point,
    Prices,
    Report,
    evaluate_routing,
    find_data,
    load_routellm_gsm8k,
    oracle_accuracy,
    summarize,
)

__all__ = [
    "DEFAULT_PRICES",
    "ROUTERS",
    "Curve",
    "Dataset",
    "Item",
    "Point",
    "Prices",
    "Report",
    "evaluate_routing",
    "find_data",
    "load_routellm_gsm8k",
    "oracle_accuracy",
    "summarize",
]
