"""Which failures are worth another try, and how long to wait before it.

Transient trouble (a dropped connection, a stall or a transfer below the lowest speed, a
5xx, 408 or 429, a body shorter than announced) is retried with exponential backoff and
"equal jitter", honouring `Retry-After`: the wait is drawn between half the exponential step
and the whole of it. Not full jitter (anywhere from zero): a retry always leaves a failing
origin at least half its step, while workers that failed together still spread out.
A file still locked by an attempt that is stepping aside is retried too.
A 403 or 410 from the host a source REDIRECTED to is a signed URL that expired (a hub's CDN
link): the next attempt asks the source again, gets a fresh link and resumes with Range. A
403 from the source's own host is a real refusal. An expired link uses up a retry like any
other, so a CDN that always refuses still fails.
Everything else (other 4xx, a checksum mismatch, a full disk, a refused address, a host
whose name does not exist: `errors.HostNotFoundError`) fails at once: trying again would
only repeat it. A temporary resolver failure is a connection error like any other, retried.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests

from downloader.engine.errors import (
    DestinationBusyError,
    DirectoryRemovedError,
    IncompleteDownloadError,
    StalledTransferError,
)
from downloader.engine.origins import origin

MAX_DELAY = 60.0
RETRIABLE_STATUS = frozenset({408, 429})
EXPIRED_STATUS = frozenset({403, 410})
"""What a CDN answers for a signed URL past its expiry (S3 and CloudFront: 403)."""


def is_retriable(exc: BaseException) -> bool:
    """Whether another try may succeed where this one failed.

    Args:
        exc: what the attempt raised.

    Returns:
        True for transient trouble (see the module's docstring): connection errors and
        timeouts, 408, 429 and 5xx answers, an expired signed link (a 403 or 410 from where
        the source redirected), a body shorter than announced, a stall, a file still held by
        an attempt that is stepping aside. False for everything else.
    """
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
        | DestinationBusyError
        # Another job removed the (then empty) directory: the next try makes it again.
        | DirectoryRemovedError,
    )


def redirected_elsewhere(response: requests.Response | None) -> bool:
    """Whether the answer came from another origin than the URL first asked (the source).

    Args:
        response: an answer, after its redirects; None for none.

    Returns:
        True when a redirect led to another scheme, host or port (a CDN's signed URL).
    """
    if response is None or not response.history:
        return False
    return origin(response.history[0].url) != origin(response.url)


def retry_after(exc: BaseException) -> float | None:
    """The server's `Retry-After`, in seconds.

    Args:
        exc: the failure; its `response`, if any, is read.

    Returns:
        The seconds asked for (a date in the past is 0), or None when the answer has no
        `Retry-After` that parses.
    """
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
    """Seconds to wait before a retry: the server's `Retry-After`, else equal jitter.

    Args:
        attempt: the retry's number, 1 for the first.
        base: the first step, in seconds; each retry doubles it.
        exc: the failure, whose `Retry-After` wins when it has one.

    Returns:
        `Retry-After` when the server sent one, else a random time between half the step
        (`base * 2 ** (attempt - 1)`) and the whole step; never more than `MAX_DELAY`.
    """
    asked = retry_after(exc) if exc is not None else None
    if asked is not None:
        return min(asked, MAX_DELAY)
    ceiling = min(base * 2 ** (attempt - 1), MAX_DELAY)
    return random.uniform(ceiling / 2, ceiling)
