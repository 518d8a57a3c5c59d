"""Freed memory goes back to the system after pushes.

A full push hands every proxy its own copy of half a megabyte or more per resource type (gRPC
copies each message it sends), so a thousand proxies syncing pass through gigabytes. glibc
keeps what was freed for reuse, and the small allocations that stay alive between those copies
keep it from shrinking the heap: at 600 proxies the control plane sat at 300 MB of which 145 MB
were free pages, and ``malloc_trim`` gave them back at once. So after anything changed, once a
few seconds pass, the heap is trimmed (a few milliseconds). Where the C library has no
``malloc_trim`` (not glibc), nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger("meshinject.heap")


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


async def give_back(activity: Callable[[], Hashable], *, interval: float = 3.0,
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Trim the heap once ``activity()`` (say, how many responses were written) stood still
    for ``interval`` seconds after it moved: after a burst of pushes, not in the middle."""
    trim = _malloc_trim()
    if trim is None:
        log.info("no malloc_trim in this C library: freed memory stays with the allocator")
        return
    trimmed = seen = activity()
    while True:
        await sleep(interval)
        now = activity()
        quiet, seen = now == seen, now
        if not quiet or now == trimmed:
            continue
        started = time.perf_counter()
        trim(0)
        trimmed = now
        log.debug("heap trimmed in %.1f ms", (time.perf_counter() - started) * 1e3)
