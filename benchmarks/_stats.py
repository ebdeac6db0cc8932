"""Medians with their spread, and the small formatting helpers the report shares."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["summary"]


def summary(values: Sequence[float]) -> dict[str, Any]:
    """``{"median", "min", "max", "runs"}`` of a non-empty list of numbers."""
    if not values:
        raise ValueError("no values")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": [float(v) for v in values],
    }
