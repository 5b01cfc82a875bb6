"""How often a running job reports its progress."""

from __future__ import annotations

import time


class Throttle:
    """Lets a progress report through at most every `percent` of the total and `interval` s.

    Both limits apply, so a fast download sends about a hundred reports and a slow one one
    every `interval`; the last report (current == total) always goes through.
    """

    def __init__(self, interval: float, percent: float = 1.0) -> None:
        self.interval = interval
        self.fraction = percent / 100
        self._last_time = 0.0
        self._last_bytes = -1

    def ready(self, current: int, total: int) -> bool:
        now = time.monotonic()
        if total and current >= total:
            if self._last_bytes == current:
                return False
        elif now - self._last_time < self.interval or (
            total and current - self._last_bytes < total * self.fraction
        ):
            return False
        self._last_time, self._last_bytes = now, current
        return True
