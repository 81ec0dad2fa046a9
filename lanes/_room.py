"""Room in a lane's inbox: how ``submit`` waits when a lane has too much pending work."""

from __future__ import annotations

import trio

__all__ = ["Room"]


class Room:
    """A counted set of places handed to waiters in FIFO order.

    Like ``trio.Semaphore``, but :meth:`close` wakes every waiter (they then find the system
    closed), so nobody waits forever for a lane system that stopped.
    """

    __slots__ = ("_lot", "closed", "free", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self.closed = False
        self._lot: trio.lowlevel.ParkingLot | None = None  # made by the first waiter

    def take_nowait(self) -> bool:
        """Take a place if one is free (and nobody waits for one before us)."""
        if self.free > 0 and not self._lot:  # (None: nobody ever waited)
            self.free -= 1
            return True
        return False

    async def wait_for_place(self) -> None:
        """Wait in line for a place, after :meth:`take_nowait` found none (the caller has
        checkpointed for cancellation first). Cancellation leaves no place taken.

        Returns without a place only if the room was closed meanwhile (check ``closed``).
        """
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        await self._lot.park()  # give() hands its place to us before unparking

    def give(self) -> None:
        """Return a place: to the first waiter, or to the free count."""
        if self._lot and not self.closed:
            self._lot.unpark()
        else:
            self.free += 1

    def close(self) -> None:
        """Wake every waiter; they must check ``closed``."""
        self.closed = True
        if self._lot is not None:
            self._lot.unpark_all()

    def waiting(self) -> int:
        return 0 if self._lot is None else len(self._lot)
