"""What became of an attempt (`Outcome`), and a failed one's error as the record keeps it.

The Celery task returns the outcome, so Flower shows it as the task's result: a `StrEnum`,
whose members are the very strings Flower showed before they were an enum.
"""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit

import requests

from downloader.engine.destdir import UnsafeDestinationError
from downloader.engine.errors import DownloadJobCancelledException
from downloader.engine.netguard import ForbiddenAddressError
from downloader.engine.redact import scrub
from downloader.engine.resolver import HostNotFoundError
from downloader.engine.transfer import (
    ChecksumMismatchError,
    DestinationBusyError,
    DestinationChangedError,
    IncompleteDownloadError,
    InsufficientSpaceError,
    SizeMismatchError,
)
from downloader.engine.watchdog import StalledTransferError
from downloader.jobs.failure import CANCELLED_ERROR_TYPE, Failure, FailureKind
from downloader.jobs.models import JobVanishedError


class Outcome(StrEnum):
    """What one delivery of a job's message came to."""

    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    """A caller paused the job: it stopped, keeping its partial file for the resume."""
    HANDED_BACK = "handed back"
    """The worker is stopping: the job waits again and resumes elsewhere."""
    LEASE_LOST = "lease lost"
    """Another attempt holds the job now: this one stepped aside."""
    VANISHED = "vanished"
    """The job's record went with Redis's data: the attempt stopped, keeping its partial."""
    # What the claim decided when nothing ran (the claim's own words).
    LEASED = "leased"
    STALE = "stale"
    """The message came at a priority level the job has left; a newer one is on its way."""
    FINISHED = "finished"
    MISSING = "missing"
    TIDIED = "tidied"
    """The `downloader.discard` task's: what a job cancelled while its worker was gone left
    was looked for and removed."""

    @property
    def ends_the_job(self) -> bool:
        """Whether the job is over for good, so that its parent may settle."""
        return self not in (
            Outcome.PAUSED,
            Outcome.HANDED_BACK,
            Outcome.LEASE_LOST,
            Outcome.VANISHED,
            Outcome.STALE,
        )


_KINDS: tuple[tuple[type[BaseException], FailureKind], ...] = (
    (DownloadJobCancelledException, FailureKind.CANCELLED),
    (JobVanishedError, FailureKind.VANISHED),
    (requests.HTTPError, FailureKind.HTTP),
    (HostNotFoundError, FailureKind.HOST_NOT_FOUND),
    (StalledTransferError, FailureKind.STALLED),
    (ChecksumMismatchError, FailureKind.CHECKSUM),
    (SizeMismatchError, FailureKind.SIZE),
    (IncompleteDownloadError, FailureKind.INCOMPLETE),
    (InsufficientSpaceError, FailureKind.SPACE),
    (UnsafeDestinationError, FailureKind.UNSAFE_DESTINATION),
    (DestinationBusyError, FailureKind.DESTINATION),
    (DestinationChangedError, FailureKind.DESTINATION),
    (ForbiddenAddressError, FailureKind.FORBIDDEN_ADDRESS),
    (requests.ConnectionError, FailureKind.NETWORK),
    (requests.Timeout, FailureKind.NETWORK),
    (requests.exceptions.ChunkedEncodingError, FailureKind.NETWORK),
)
"""An exception's kind: the first entry it is an instance of (the narrower ones first)."""


def error_type(exc: BaseException) -> str:
    """InvokeAI's `error_type`: the exception's class and message, e.g. HTTPError(Not Found)."""
    if isinstance(exc, DownloadJobCancelledException):
        return CANCELLED_ERROR_TYPE
    return scrub(f"{type(exc).__name__}({exc})")


def failure_of(exc: BaseException) -> Failure:
    """The structured failure of an exception that ended an attempt, tokens scrubbed."""
    kind = next((kind for types, kind in _KINDS if isinstance(exc, types)), FailureKind.OTHER)
    response = getattr(exc, "response", None) if kind is FailureKind.HTTP else None
    status = response.status_code if response is not None else None
    url = _without_query(response.url) if response is not None and response.url else None
    return Failure(kind, scrub(str(exc)), status, url)


def _without_query(url: str) -> str:
    scheme, netloc, path, _, _ = urlsplit(url)
    return scrub(urlunsplit((scheme, netloc.rpartition("@")[2], path, "", "")))
