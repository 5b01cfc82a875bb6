"""What a worker tells the process it runs in, as data: a `downloader get` shows it, a
worker logs it. Nothing here goes to Redis (the store records retries; see `record_retry`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from downloader.jobs.failure import Failure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryNotice:
    """A transfer failed in a way worth retrying, and will be retried after `delay`."""

    job_id: int
    url: str
    """The job's source as a line may show it (`redact.shown_url`: no query, no user)."""
    attempt: int
    """This retry's number, from 1."""
    of: int
    """How many retries the job may make (`DOWNLOADER_MAX_RETRIES`)."""
    delay: float
    """Seconds before the retry."""
    error_type: str
    """The failure, as a job's `error_type` says it (`ConnectionError(...)`), tokens masked."""
    failure: Failure | None = None
    """The same failure as data (its kind, HTTP status, URL), to tell without parsing."""


RetryListener = Callable[[RetryNotice], None]


class RetryListeners(list[RetryListener]):
    """The process's listeners to retries; with none, a retry is a warning in the log."""

    def tell(self, notice: RetryNotice) -> None:
        if not self:
            log.warning(
                "job %s: %s; retry %d of %d in %.1f s",
                notice.job_id,
                notice.error_type,
                notice.attempt,
                notice.of,
                notice.delay,
            )
        for listener in self:
            try:
                listener(notice)
            except Exception:
                log.exception("a retry listener raised; the download goes on")
