"""Reconnect delays: exponential backoff with full jitter (AWS architecture blog)."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay n is uniform in [0, min(cap, base * 2**n)]: clients that lost the same
    server spread out instead of reconnecting in waves."""

    base_s: float = 0.5
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0
    # The latest (ceiling, delay) pairs drawn, for logs and tests.
    history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=1000))

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.attempt, 32))
        self.attempt += 1
        delay = self.rng.uniform(0, ceiling)
        self.history.append((ceiling, delay))
        return delay

    def reset(self) -> None:
        self.attempt = 0
