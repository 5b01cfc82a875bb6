"""Liveness of one transfer, whatever the origin's pace.

A read waits for the origin: a server that sends one byte a second, or nothing at all while
holding the connection open, would otherwise pin a worker slot and make it deaf to a cancel,
a removal or the worker's own shutdown until the read timeout. A transfer's `Watchdog` asks
every half second whether the job must stop (`check`) and whether the transfer stayed below
the lowest acceptable speed for a whole window (like aria2's `--lowest-speed-limit`). When
either says stop, it remembers why and shuts the transfer's sockets down, which ends any
blocked read at once; the reading thread then raises the reason.

The watchdogs of a process share one thread (`_Ticker`), started when first needed: a thread
per transfer cost a small file more than its bytes did (a `clone3` and the GIL handed around
per job), and a transfer over within half a second is never looked at by it at all (the
transfer itself asks once before its rename). The checks of one tick run one after another.
Time spent waiting for the fleet's limits (a connection slot, bandwidth; see `waiting`) is not
the origin's slowness: the speed window leaves it out.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import requests

from downloader.engine.errors import StalledTransferError

CHECK_EVERY = 0.5


def socket_of(response: requests.Response) -> socket.socket | None:
    """The socket under a streamed answer, for the watchdog to shut and a read to peek at.

    Args:
        response: a streamed answer.

    Returns:
        The socket of its urllib3 connection; None for other transports (a test adapter).
    """
    connection = getattr(response.raw, "connection", None) or getattr(
        response.raw, "_connection", None
    )
    return getattr(connection, "sock", None)


TICK = 0.1
"""Seconds between the shared thread's looks at which watchdog is due."""


class _Ticker:
    """The one thread that runs every started watchdog's looks when they are due."""

    def __init__(self) -> None:
        self.due: dict[Watchdog, float] = {}
        self.lock = threading.Condition()
        self.thread: threading.Thread | None = None

    def add(self, watchdog: Watchdog) -> None:
        with self.lock:
            self.due[watchdog] = time.monotonic() + CHECK_EVERY
            if self.thread is None or not self.thread.is_alive():  # none yet, or forked
                self.thread = threading.Thread(
                    target=self.run, name="downloader-watchdog", daemon=True
                )
                self.thread.start()
            self.lock.notify()

    def remove(self, watchdog: Watchdog) -> None:
        with self.lock:
            self.due.pop(watchdog, None)

    def run(self) -> None:
        while True:
            with self.lock:
                while not self.due:
                    self.lock.wait()
                now = time.monotonic()
                ready = [w for w, at in self.due.items() if at <= now]
                for watchdog in ready:
                    self.due[watchdog] = now + CHECK_EVERY
            for watchdog in ready:
                if not watchdog.look():
                    self.remove(watchdog)
            time.sleep(TICK)


_TICKER = _Ticker()


class Watchdog:
    def __init__(
        self,
        check: Callable[[int, int], None],
        lowest_speed: int,
        window: float,
    ) -> None:
        self.check = check
        """Raises when the job must stop (cancelled, removed, worker stopping); gets the counts."""
        self.lowest_speed, self.window = lowest_speed, window
        self.current = self.total = 0
        self.reason: BaseException | None = None
        self.done = threading.Event()
        self._window = (0.0, 0)
        """When the current speed window began, and the bytes counted then."""
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._waiting = 0
        """Threads of the transfer waiting for a limit now."""
        self._waited = 0.0
        """Seconds such waits took since the speed window began."""

    def watch(self, response: requests.Response) -> None:
        sock = socket_of(response)
        if sock is None:
            return
        with self._lock:
            if self.reason is not None:
                _shut(sock)
            self._sockets.add(sock)

    def count(self, current: int, total: int) -> None:
        self.current, self.total = current, total

    def start(self) -> None:
        """Have the shared thread look at this transfer every `CHECK_EVERY` seconds."""
        self._window = (time.monotonic(), self.current)
        _TICKER.add(self)

    def look(self) -> bool:
        """One look: whether the job must stop, and whether the transfer is too slow.

        Returns:
            Whether to look again (False once finished or stopped).
        """
        if self.done.is_set():
            return False
        try:
            self.check(self.current, self.total)
        except BaseException as exc:  # the job's own verdict: stop with it
            self.stop(exc)
            return False
        now = time.monotonic()
        window_start, window_bytes = self._window
        with self._lock:
            waiting, waited, self._waited = self._waiting, self._waited, 0.0
        if waiting:  # a limit holds the transfer back, not the origin: start again
            self._window = (now, self.current)
            return not self.done.is_set()
        window_start += waited  # waits that ended do not count either
        self._window = (window_start, window_bytes)
        if self.lowest_speed and now - window_start >= self.window:
            speed = (self.current - window_bytes) / (now - window_start)
            if speed < self.lowest_speed:
                self.stop(
                    StalledTransferError(
                        f"the transfer stayed below {self.lowest_speed} bytes/s for "
                        f"{self.window:g} s ({speed:.0f} bytes/s)"
                    )
                )
                return False
            self._window = (now, self.current)
        return not self.done.is_set()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around a wait for the fleet's limits: it does not count against the speed."""
        began = time.monotonic()
        with self._lock:
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1
                self._waited += time.monotonic() - began

    def stop(self, reason: BaseException) -> None:
        with self._lock:
            self.reason = reason
            for sock in self._sockets:
                _shut(sock)

    def finish(self) -> None:
        self.done.set()
        _TICKER.remove(self)

    def raise_reason(self, cause: BaseException) -> None:
        """If the watchdog stopped the transfer, raise its reason in place of `cause`, the
        error the broken read happened to raise."""
        if self.reason is not None and self.reason is not cause:
            raise self.reason from cause


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
