"""Where one job's bytes may come from: its source first, then the mirrors it was given.

A job names one source; that URL is the file's identity (the partial file's state, the
completed file's stamp and every resume are keyed on it). Mirrors are other URLs said to
serve the same file. This module only keeps the line-up for one job, across its retries:
which URLs are still allowed, and which to ask first. A URL that failed (an error, an HTTP
error, a stall) goes behind those that have not, so a retry or a segment that lost its
connection moves to another; a mirror whose answer does not match the file (another size,
another version) is dropped for the rest of the job, with a log line. The source itself is
never dropped: it is the authority the file is judged by.

Whether an answer matches is the version policy's business (see `versions`); the token rule
is here, because it is about which URL may receive what: a job's token goes only to its
source's origin, never to a mirror on another one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from urllib.parse import urlsplit

from downloader.engine.origins import origin
from downloader.engine.redact import scrub

log = logging.getLogger(__name__)


class Mirrors:
    """The URLs of one job's file and how each has fared; shared by the job's attempts and
    by the threads of a segmented download, hence the lock."""

    def __init__(self, source: str, mirrors: Sequence[str] = ()) -> None:
        self.source = source
        self.urls = list(dict.fromkeys([source, *mirrors]))
        self.failures = dict.fromkeys(self.urls, 0)
        self.dropped: dict[str, str] = {}
        self._lock = threading.Lock()

    def is_mirror(self, url: str) -> bool:
        return url != self.source

    def line(self, start: int = 0) -> list[str]:
        """The URLs still allowed, fewest failures first; equals in turn from `start`, so
        that segment `i` begins on its own URL and segments spread over all of them."""
        with self._lock:
            live = [url for url in self.urls if url not in self.dropped]
            if not live:
                return []
            turn = start % len(live)
            rotated = live[turn:] + live[:turn]
            return sorted(rotated, key=lambda url: self.failures[url])

    def failed(self, url: str) -> None:
        """`url` failed or stalled: others go before it from now on."""
        with self._lock:
            self.failures[url] += 1

    def drop(self, url: str, reason: str) -> None:
        """Never ask mirror `url` again in this job: its answer is not this file."""
        if not self.is_mirror(url):
            return
        with self._lock:
            if url in self.dropped:
                return
            self.dropped[url] = reason
        log.warning("mirror %s dropped for %s: %s", _shown(url), _shown(self.source), reason)

    def may_carry_token(self, url: str) -> bool:
        """A job's token is for its source's origin only; a mirror elsewhere never sees it."""
        return origin(url) == origin(self.source)


def _shown(url: str) -> str:
    """`url` as a log line may show it: no user info, no query (a signed URL's signature is a
    credential too), and no token the process knows."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return scrub(f"{parts.scheme}://{parts.hostname}{port}{parts.path}")
