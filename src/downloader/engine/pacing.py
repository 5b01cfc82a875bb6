"""The engine's one view of limits it does not keep: before each connection it asks for a slot
of the connection's host, and for the bytes it read it asks for bandwidth.

Who keeps the limits is the caller's business (a worker's are shared by the fleet through
Redis, see `worker.pacing`); the engine only calls `connect` before every request (every
segment's included) and releases the slot when the answer is closed, and calls `spend` after
every read. Both may block; both give up at once when `stop` raises (a cancel, the watchdog).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Slot(Protocol):
    """A connection slot of one host, held until released (releasing twice is harmless)."""

    def release(self) -> None: ...

    def spend(self, count: int) -> None:
        """`count` bytes were read on this connection: block until the budgets that apply
        allow them."""
        ...


class Pacing(Protocol):
    """Where a transfer gets its connection slots."""

    def connect(self, url: str, stop: Callable[[], None]) -> Slot:
        """Block until a connection to `url`'s host may open, and hold a slot for it.

        Args:
            url: the URL about to be asked.
            stop: called while waiting; it raises to give up (the transfer must stop).
        """
        ...


class _Free:
    def release(self) -> None:
        pass

    def spend(self, count: int) -> None:
        pass


class Unpaced:
    """No limits: every connection opens at once and reads as fast as it can."""

    def connect(self, url: str, stop: Callable[[], None]) -> Slot:
        return _Free()
