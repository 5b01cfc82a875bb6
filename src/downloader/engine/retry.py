"""Which failures are worth another try, and how long to wait before it.

Transient trouble (a dropped connection, a stall or a transfer below the lowest speed, a
5xx, 408 or 429, a body shorter than announced) is retried with exponential backoff and full
jitter, honouring `Retry-After`.
A file still locked by an attempt that is stepping aside is retried too.
A 403 or 410 from the host a source REDIRECTED to is a signed URL that expired (a hub's CDN
link): the next attempt asks the source again, gets a fresh link and resumes with Range. A
403 from the source's own host is a real refusal. An expired link uses up a retry like any
other, so a CDN that always refuses still fails.
Everything else (other 4xx, a checksum mismatch, a full disk, a refused address, a host
whose name does not exist: `resolver.HostNotFoundError`) fails at once: trying again would
only repeat it. A temporary resolver failure is a connection error like any other, retried.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests

from downloader.engine.errors import (
    DestinationBusyError,
    IncompleteDownloadError,
    StalledTransferError,
)
from downloader.engine.origins import origin

MAX_DELAY = 60.0
RETRIABLE_STATUS = frozenset({408, 429})
EXPIRED_STATUS = frozenset({403, 410})
"""What a CDN answers for a signed URL past its expiry (S3 and CloudFront: 403)."""


def is_retriable(exc: BaseException) -> bool:
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        return (
            status in RETRIABLE_STATUS
            or status >= 500
            or (status in EXPIRED_STATUS and redirected_elsewhere(exc.response))
        )
    return isinstance(
        exc,
        requests.ConnectionError
        | requests.Timeout
        | requests.exceptions.ChunkedEncodingError
        | IncompleteDownloadError
        # Below the lowest speed for a whole window: another connection may do better.
        | StalledTransferError
        # The file's previous writer (an attempt that lost its lease) is about to let go.
        | DestinationBusyError,
    )


def redirected_elsewhere(response: requests.Response | None) -> bool:
    """Whether the answer came from another origin than the URL first asked (the source)."""
    if response is None or not response.history:
        return False
    return origin(response.history[0].url) != origin(response.url)


def retry_after(exc: BaseException) -> float | None:
    """The server's `Retry-After`, in seconds, when it sent one."""
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def backoff(attempt: int, base: float, exc: BaseException | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry)."""
    asked = retry_after(exc) if exc is not None else None
    if asked is not None:
        return min(asked, MAX_DELAY)
    ceiling = min(base * 2 ** (attempt - 1), MAX_DELAY)
    return random.uniform(ceiling / 2, ceiling)
