"""Garbage-collector settings for a serving process.

Every update allocates a few short-lived containers (its log entry, its commit future,
callbacks). With CPython's default thresholds the youngest generation is collected every
700 allocations, updates waiting a few milliseconds for their commit get promoted, and
full collections then run about once a second and scan every object the process holds:
pauses of 50-90 ms at 20k updates/s on the durable-write benchmark, straight into
ack latency. Freezing what startup built keeps it out of every scan, and a larger first
threshold lets an update's objects die before they are ever scanned (same benchmark:
no full collection, the longest pause 5 ms).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune_for_serving() -> None:
    """Call once, after startup imported and built what lives as long as the process."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 100)
