"""The heap is trimmed after a burst of pushes, once, and not in the middle of one."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util

import pytest

from controlplane import heap


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


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mapped_blocks() -> int:
    """How many blocks glibc serves from mappings of their own (``mallinfo2().hblks``)."""
    mallinfo2 = ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().hblks)


def test_big_blocks_get_mappings_of_their_own() -> None:
    """After it, 100 KB blocks (under glibc's default threshold of 128 KB) are mappings of their
    own, returned whole when freed, not pieces of the heap (glibc still cuts one from the heap's
    free top when it fits there, so not every one)."""
    assert heap.map_big_blocks_apart()
    before = _mapped_blocks()
    blocks = [bytearray(100 * 1024) for _ in range(20)]
    assert _mapped_blocks() >= before + 10
    del blocks
    assert _mapped_blocks() < before + 10
