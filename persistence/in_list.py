"""`IN (...)` lists of a varying number of ids, padded to a few fixed lengths.

Drivers cache a prepared statement per SQL text; a list whose length followed the batch
would prepare a new statement (an extra round trip and a fresh plan) almost every time.
Padding repeats the last id, which an `IN` list ignores.
"""

from __future__ import annotations

from collections.abc import Sequence


def padded_in(values: Sequence[str], first_param: int) -> tuple[str, list[str]]:
    """`($n, $n+1, …)` for `values` padded to the next power of two, and the padded
    values. `values` must not be empty."""
    size = 1 << (len(values) - 1).bit_length()
    padded = [*values, *[values[-1]] * (size - len(values))]
    marks = ", ".join(f"${first_param + i}" for i in range(size))
    return f"({marks})", padded
