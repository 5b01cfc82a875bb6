"""Ids for jobs queued one at a time, taken from the store in blocks while they come fast."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from downloader.store.jobs import JobStore

FRESH = 1.0
"""Seconds a block's ids may be handed out after it was taken: an id stays close to when its
job was queued, as it is for the other clients of the namespace."""

LARGEST = 64
"""The most ids taken in one block."""


class JobIds:
    """The next job id for `download()`, one `INCRBY` per block rather than per job.

    A job alone takes one id, as before; each block used up within `FRESH` seconds of being
    taken makes the next one twice as large (up to `LARGEST`), so a caller queueing hundreds
    of jobs one call at a time pays a round trip per block. The ids of a block left unused
    are never used: ids stay unique, with gaps, and a block's ids are at most `FRESH`
    seconds older than the jobs that take them.
    """

    def __init__(self, store: Callable[[], JobStore]) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._spare: deque[int] = deque()
        self._taken = float("-inf")
        self._size = 1

    def next(self) -> int:
        with self._lock:
            now = time.monotonic()
            fresh = now - self._taken < FRESH
            if fresh and self._spare:
                return self._spare.popleft()
            self._size = min(LARGEST, self._size * 2) if fresh else 1
            self._spare = deque(self._store().new_ids(self._size))
            self._taken = now
            return self._spare.popleft()
