"""Latency samples and their percentiles."""

from __future__ import annotations


def percentile(ordered: list[float], p: float) -> float | None:
    """The `p`-th percentile of an already sorted list (nearest rank); None if empty."""
    if not ordered:
        return None
    rank = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[rank]


def summary_ms(samples_ns: list[int]) -> dict[str, float | int | None]:
    """count, p50, p99 and max of nanosecond samples, in milliseconds."""
    ordered = sorted(samples_ns)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value / 1e6, 3)

    return {
        "count": len(ordered),
        "p50_ms": ms(percentile(ordered, 50)),
        "p99_ms": ms(percentile(ordered, 99)),
        "max_ms": ms(ordered[-1] if ordered else None),
    }
