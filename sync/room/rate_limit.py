"""Message rate limits, as pure arithmetic on a clock the caller passes in.

A connection may send `rate` messages per second averaged over `window_s` seconds: a
token bucket holding `rate * window_s` tokens, refilled at `rate`. Past that the sender
is throttled (the caller waits before reading its next message, so TCP pushes back on
it); a sender that stays throttled for longer than one window is over the limit
persistently, and the caller closes it. Being throttled ends only when the sender has
slowed down enough for the bucket to refill halfway: a pause of the reader (a busy event
loop) refills a few tokens and must not forgive a flood.
"""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("a token bucket needs a positive rate and room for one token")
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self._updated = now

    def take(self, now: float) -> float:
        """Take one token; return how long to wait before acting on it (0: at once)."""
        self._refill(now)
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def take_if_any(self, now: float) -> bool:
        """Take one token if there is one (never into debt); whether one was taken."""
        self._refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def full(self, now: float) -> bool:
        """Whether it has refilled to capacity by `now` (as good as a new bucket)."""
        return self.tokens + max(0.0, now - self._updated) * self.rate >= self.capacity

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)


class MessageRateLimit:
    def __init__(self, rate: float, window_s: float, now: float) -> None:
        self._bucket = TokenBucket(rate, max(1.0, rate * window_s), now)
        self._window_s = window_s
        self._throttled_since: float | None = None

    @property
    def throttled(self) -> bool:
        return self._throttled_since is not None

    def admit(self, now: float) -> float | None:
        """Seconds to wait before handling one more message, or None if the sender has
        been throttled for longer than the window (close it)."""
        wait = self._bucket.take(now)
        if self._throttled_since is None:
            if wait > 0.0:
                self._throttled_since = now
        elif self._bucket.tokens >= self._bucket.capacity / 2:
            self._throttled_since = None  # it slowed down: forgiven
        elif now - self._throttled_since > self._window_s:
            return None
        return wait
