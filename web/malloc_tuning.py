"""glibc malloc settings for a serving process.

Artifact bodies stream through in parts of 1 to 5 MiB, copied a few times on the way
(minio holds an S3 part while it sends it). glibc serves such blocks from mmap until one
is freed, then raises its mmap threshold to that size, and from then on keeps them in
per-thread arenas that it rarely returns to the system: a 200 MB upload to S3 left the
server ~20 MB larger and peaked ~40 MB above where it started. A fixed threshold of
1 MiB keeps every block that large in its own mapping, returned when freed (the same
upload: back to where it started, peaking ~25 MB above). Blocks that large are rare
elsewhere (a big document update), and one mmap per MiB moved costs microseconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 1024 * 1024


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold; False where there is no glibc `mallopt` (e.g. musl
    ignores it, macOS has none)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
