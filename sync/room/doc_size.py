"""The size limit of one document (its full state encoded as one update).

Encoding a whole document on every update would cost too much, so the room keeps an
upper estimate: the last measured size plus every byte accepted since (overwritten
content makes the true size smaller, never larger). Only when the estimate says an
update would cross the limit is the document measured again, and at most once per
`remeasure_step` bytes of growth, so a client pushing at the limit cannot make every
update pay for a full encode.
"""

from __future__ import annotations

from collections.abc import Callable

REMEASURE_FRACTION = 64  # re-measure after growing 1/64 of the limit


class DocumentTooLarge(Exception):
    """Applying the update would grow the document past its limit."""


class DocumentSize:
    def __init__(self, limit: int, measure: Callable[[], int], estimate: int) -> None:
        self.limit = limit
        self._measure = measure
        self._measured = estimate
        self._exact = False  # the first estimate (snapshot + log tail) is not a measurement
        self._grown = 0  # bytes accepted since the last measurement
        self._remeasure_step = max(1, limit // REMEASURE_FRACTION)

    @property
    def estimate(self) -> int:
        return self._measured + self._grown

    def check(self, incoming: int) -> None:
        """Raise DocumentTooLarge if an update of `incoming` bytes may not be applied."""
        if self.estimate + incoming <= self.limit:
            return
        if not self._exact or self._grown >= self._remeasure_step:
            self._measured, self._grown, self._exact = self._measure(), 0, True
        if self.estimate + incoming > self.limit:
            raise DocumentTooLarge(f"the document would exceed {self.limit} bytes")

    def grew(self, size: int) -> None:
        self._grown += size
