"""Counts of shards, merged: a generic sum over nested dicts of numbers (the contract's derived fields, such as
``keep_rate``, are computed from the sums by the stage that publishes them)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def sum_counts(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum nested dicts key by key: numbers add, dicts merge recursively."""
    total: dict[str, Any] = {}
    for item in items:
        _add(total, item)
    return total


def _add(total: dict, item: dict) -> None:
    for k, v in item.items():
        if isinstance(v, dict):
            _add(total.setdefault(k, {}), v)
        elif isinstance(v, bool) or not isinstance(v, int | float):
            raise TypeError(f"counts must be numbers or dicts of numbers, got {k}={v!r}")
        else:
            total[k] = total.get(k, 0) + v


def ratio(a: float, b: float) -> float:
    return a / b if b else 0.0
