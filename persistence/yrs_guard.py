"""One guard for calls into yrs on bytes from outside: what it raises, a panic included,
comes out as a plain `YrsError`.

pycrdt's `PanicException` is a BaseException, so `except Exception` lets a yrs panic
through; catching BaseException would swallow Ctrl-C and `sys.exit` too. The guard
catches everything but those two.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class YrsError(Exception):
    """yrs refused (or panicked on) an update or a state; the original is `__cause__`."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.kind = type(cause).__name__  # e.g. "PanicException"


@contextmanager
def yrs_guard() -> Iterator[None]:
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        raise YrsError(exc) from exc
