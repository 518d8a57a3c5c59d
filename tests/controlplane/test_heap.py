"""The heap is trimmed after a burst of pushes, once, and not in the middle of one."""

from __future__ import annotations

import asyncio

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
