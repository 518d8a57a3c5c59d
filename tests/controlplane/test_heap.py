"""The heap is trimmed after a burst of pushes, once, and not in the middle of one."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from controlplane import heap
from tests.support.paths import REPO


def test_trimmed_once_activity_stands_still_and_not_while_it_moves(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``activity()`` reads at each look: still, a burst, still, one more."""
    looks = iter([0, 0, 1, 2, 3, 3, 3, 3, 4, 4, 4])
    now = [0]
    trims: list[int] = []

    def trim(pad: int) -> int:
        trims.append(now[0])
        return 1

    monkeypatch.setattr(heap, "_malloc_trim", lambda: trim)

    async def sleep(seconds: float) -> None:
        try:
            now[0] = next(looks)
        except StopIteration:
            raise asyncio.CancelledError from None

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(heap.give_back(lambda: now[0], sleep=sleep))
    assert trims == [3, 4]  # after each burst, once; never in one, never when nothing moved


def test_this_c_library_can_trim() -> None:
    """The control plane runs on glibc (Debian, the Envoy images): the trim must be found
    there, or the memory it keeps is silently back."""
    assert heap._malloc_trim() is not None


_PROBE = """
import ctypes, ctypes.util, sys
from controlplane import heap

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

info = ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2
info.restype = MallInfo2
took = heap.map_big_blocks_apart() if sys.argv[1] == "apart" else True
before = info().hblks
blocks = [bytearray(100 * 1024) for _ in range(20)]
held = info().hblks
del blocks
print(took, held - before, info().hblks - before)
"""


def _probe(mode: str) -> tuple[bool, int, int]:
    """In a fresh interpreter (a long-lived one may have room at its heap's top, which glibc
    uses first): whether the C library took the setting, and how many more blocks are mapped
    apart while twenty 100 KB blocks are held and after they are freed."""
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True,
                          text=True, timeout=30, check=True, cwd=REPO)
    took, held, after = done.stdout.split()
    return took == "True", int(held), int(after)


def test_big_blocks_get_mappings_of_their_own() -> None:
    """After it, 100 KB blocks (under glibc's default threshold of 128 KB) are mappings of their
    own, returned whole when freed, not pieces of the heap; without it, none is."""
    took, held, after = _probe("apart")
    assert took and held >= 15 and after <= 0
    assert _probe("default")[1] == 0
