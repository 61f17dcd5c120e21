"""One timer for many streams that wait until about the same moment.

A stream that is behind waits ``SseConfig.write_delay`` between two writes
(see :mod:`trio_sse._driver`). With a thousand such streams, a timer each
costs the server more than the waiting saves: every expiry is a cancel
scope's deadline, a :exc:`trio.Cancelled` raised and caught. A
:class:`Pacer` rounds each wake-up up to the next multiple of its
``quantum`` and keeps one timer per such moment: the first stream to wait
for it sleeps, the others park in a :class:`trio.lowlevel.ParkingLot`, and
all wake together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import trio

__all__ = ["PACER_SCOPE_KEY", "Pacer", "pacer_of"]

#: Scope key under which :func:`trio_sse.serve` shares one :class:`Pacer`
#: between the streams it serves.
PACER_SCOPE_KEY = "trio_sse.pacer"


class Pacer:
    """Wakes the tasks waiting for the same moment with one timer.

    :param quantum: wake-ups are rounded up to a multiple of this many
        seconds (a task waits at most this much longer than it asked).
    """

    __slots__ = ("_moments", "quantum")

    def __init__(self, quantum: float = 0.01) -> None:
        if not quantum > 0:
            raise ValueError(f"quantum must be positive, got {quantum!r}")
        self.quantum = quantum
        # Moment index -> the tasks parked until it (its keeper sleeps).
        self._moments: dict[int, trio.lowlevel.ParkingLot] = {}

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline``, rounded up to the next moment.

        A checkpoint; cancellable as :func:`trio.sleep_until` is.
        """
        index = math.ceil(deadline / self.quantum)
        at = index * self.quantum
        if at <= trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        lot = self._moments.get(index)
        if lot is None:
            lot = self._moments[index] = trio.lowlevel.ParkingLot()
        else:
            await lot.park()
            if trio.current_time() >= at:
                return
            # Woken early: its keeper was cancelled and handed the timer on.
        await self._keep(index, lot, at)

    async def _keep(self, index: int, lot: trio.lowlevel.ParkingLot, at: float) -> None:
        """Sleep until ``at`` with a timer, then wake everyone parked for it."""
        try:
            await trio.sleep_until(at)
        finally:
            if trio.current_time() >= at or not lot:
                del self._moments[index]
                lot.unpark_all()
            else:
                # Cancelled before the moment: the next in line keeps it.
                lot.unpark()


def pacer_of(scope: Mapping[str, Any]) -> Pacer | None:
    """The :class:`Pacer` a server put in ``scope``, if any."""
    pacer = scope.get(PACER_SCOPE_KEY)
    return pacer if isinstance(pacer, Pacer) else None
